/*
 * TLS identities: an SSL_CTX per identity (private key, certificate chain,
 * trust bundle), made from PEM, named to JavaScript by a number. Replacing an
 * identity is making a new context and freeing the old id: new handshakes use
 * the new one, and open connections keep the old one alive through their SSL
 * (OpenSSL counts the references), so none is dropped.
 *
 * Every context is TLS 1.3 only, verifies the peer's chain to the bundle and,
 * as a server, requires a client certificate. As a client it keeps the
 * newest resumable session per peer (TLS 1.3 tickets), so a new connection to
 * a known peer costs no full handshake. As a server it keeps the sessions it
 * issued tickets for in its own bounded cache (stateful tickets: a ticket
 * names a cached session), so resuming decodes and decrypts nothing: a
 * stateless ticket carries the session encrypted, and decoding the peer's
 * certificate out of it on every resumption cost a fifth of a new
 * connection's CPU. Sessions belong to the context that made them and go
 * with it: after a rotation (a new context) nothing made before resumes.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exports.h"
#include "tls.h"

#define CONTEXT_USAGE "tlsContext(keyPem, chainPem, bundlePem)"
#define CONTEXT_FREE_USAGE "tlsContextFree(id)"
/* Peers a client remembers a session for; the oldest is forgotten first. */
#define SESSION_SLOTS 256
/* Sessions a server context keeps (the least recently used goes first), and for how long a session resumes. */
#define SERVER_SESSIONS 1024
#define SESSION_LIFETIME_S (2 * 60 * 60)
#define MAX_PEM (1024 * 1024)

static SSL_CTX **contexts; /* contexts[id - 1] */
static uint32_t context_cap;
static uint32_t context_count;

struct session_slot {
  char *key;
  uint32_t context_id;
  SSL_SESSION *session;
  uint64_t stamp;
};
static struct session_slot sessions[SESSION_SLOTS];
static uint64_t session_clock;
static size_t session_count;
static uint32_t tickets_received; /* by clients, ever (wraps): how often servers sent one */

SSL_CTX *core_tls_context(uint32_t id) { return id >= 1 && id <= context_cap ? contexts[id - 1] : NULL; }

static void slot_clear(struct session_slot *slot) {
  if (!slot->session) return;
  SSL_SESSION_free(slot->session);
  free(slot->key);
  memset(slot, 0, sizeof *slot);
  session_count--;
}

SSL_SESSION *core_tls_session_get(uint32_t context_id, const char *key) {
  for (size_t i = 0; i < SESSION_SLOTS; i++) {
    struct session_slot *slot = &sessions[i];
    if (slot->session && slot->context_id == context_id && strcmp(slot->key, key) == 0) {
      if (!SSL_SESSION_is_resumable(slot->session)) {
        slot_clear(slot);
        return NULL;
      }
      return SSL_SESSION_dup(slot->session);
    }
  }
  return NULL;
}

/*
 * OpenSSL hands a client every new session (TLS 1.3: each ticket the server
 * sends); the slot keeps a copy. Never the connection's own object: SSL_free
 * of a connection that ends without close_notify (a reset, a truncation)
 * marks its session not resumable, which would cost every connection to that
 * peer a full handshake until the next ticket.
 */
static int on_new_session(SSL *ssl, SSL_SESSION *session) {
  if (SSL_is_server(ssl)) {
    /* The session a stateful ticket names: into this context's cache (which takes its own reference). */
    SSL_CTX_add_session(SSL_get_SSL_CTX(ssl), session);
    ERR_clear_error();
    return 0;
  }
  tickets_received++;
  core_tls *t = core_tls_of(ssl);
  if (!t || !t->keyed || !SSL_SESSION_is_resumable(session)) return 0;
  SSL_SESSION *copy = SSL_SESSION_dup(session);
  if (!copy) {
    ERR_clear_error();
    return 0;
  }
  struct session_slot *slot = NULL, *oldest = &sessions[0];
  for (size_t i = 0; i < SESSION_SLOTS && !slot; i++) {
    struct session_slot *s = &sessions[i];
    if (s->session && s->context_id == t->context_id && strcmp(s->key, t->session_key) == 0) slot = s;
    else if (!s->session || (oldest->session && s->stamp < oldest->stamp)) oldest = s;
  }
  if (!slot) slot = oldest;
  char *key = strdup(t->session_key);
  if (!key) {
    SSL_SESSION_free(copy);
    return 0;
  }
  slot_clear(slot);
  slot->key = key;
  slot->context_id = t->context_id;
  slot->session = copy;
  slot->stamp = ++session_clock;
  session_count++;
  return 0;
}

/*
 * A server issues a ticket after a full handshake only: OpenSSL's stateless
 * tickets stay valid for their lifetime however often they are used, so the
 * client keeps resuming with the one it has, and a fresh ticket after every
 * resumption (encrypting the session with the peer's certificate again) would
 * cost each new connection without making anything safer. Whether the
 * handshake resumes is known once the ClientHello is processed, before the
 * server's Finished and long before it would write the ticket.
 */
static void on_handshake_state(const SSL *ssl, int where, int ret) {
  (void)ret;
  if ((where & SSL_CB_ACCEPT_LOOP) && SSL_session_reused(ssl) == 1 && SSL_get_num_tickets(ssl) != 0) SSL_set_num_tickets((SSL *)ssl, 0);
}

/* Throws ERR_VSOCKMESH_TLS naming what was wrong and OpenSSL's first reason; returns NULL. */
static napi_value throw_tls(napi_env env, const char *what) {
  char reason[256] = "no detail";
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  char message[400];
  snprintf(message, sizeof message, "tlsContext: %s (%s)", what, reason);
  NAPI_MUST(napi_throw_error(env, "ERR_VSOCKMESH_TLS", message));
  return NULL;
}

/* A string argument copied to memory the caller frees (and wipes, for a key); NULL with an exception thrown. */
static char *arg_pem(napi_env env, napi_value v, size_t *len) {
  napi_valuetype type;
  if (!JS_OK(env, napi_typeof(env, v, &type))) return NULL;
  if (type != napi_string) {
    core_throw_usage(env, CONTEXT_USAGE);
    return NULL;
  }
  if (!JS_OK(env, napi_get_value_string_utf8(env, v, NULL, 0, len))) return NULL;
  if (*len > MAX_PEM) {
    core_throw_usage(env, CONTEXT_USAGE);
    return NULL;
  }
  char *buf = malloc(*len + 1);
  if (!buf) {
    core_throw_errno(env, ENOMEM, "tlsContext");
    return NULL;
  }
  if (!JS_OK(env, napi_get_value_string_utf8(env, v, buf, *len + 1, len))) {
    free(buf);
    return NULL;
  }
  return buf;
}

static bool use_key(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  bool ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  return ok;
}

/* The first certificate is the leaf, the others its chain up to (not including) the bundle's root. */
static bool use_chain(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) return false;
  X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  bool ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
  X509_free(leaf);
  X509 *cert;
  while (ok && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    ok = SSL_CTX_add0_chain_cert(ctx, cert) == 1;
    if (!ok) X509_free(cert);
  }
  ERR_clear_error(); /* the end of the PEM text reads as "no start line" */
  BIO_free(bio);
  return ok;
}

static bool use_bundle(SSL_CTX *ctx, const char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) return false;
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  X509 *cert;
  while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, cert) == 1) count++;
    X509_free(cert);
  }
  ERR_clear_error();
  BIO_free(bio);
  return count > 0;
}

static SSL_CTX *make_context(napi_env env, const char *key, size_t key_len, const char *chain, size_t chain_len, const char *bundle, size_t bundle_len) {
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx) {
    throw_tls(env, "cannot make a context");
    return NULL;
  }
  static const unsigned char id_context[] = "vsockmesh";
  const char *problem = NULL;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 || SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) problem = "cannot restrict to TLS 1.3";
  else if (!use_key(ctx, key, key_len)) problem = "the private key is not a PEM key";
  else if (!use_chain(ctx, chain, chain_len)) problem = "the certificate chain is not PEM certificates";
  else if (SSL_CTX_check_private_key(ctx) != 1) problem = "the private key does not match the chain's first certificate";
  else if (!use_bundle(ctx, bundle, bundle_len)) problem = "the trust bundle holds no PEM certificate";
  else if (SSL_CTX_set_session_id_context(ctx, id_context, sizeof id_context - 1) != 1) problem = "cannot set the session id context";
  if (problem) {
    SSL_CTX_free(ctx);
    throw_tls(env, problem);
    return NULL;
  }
  /* Idle connections hold no buffers; a write the socket did not take is retried from the relay's own copy. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* One read of the socket per buffer, not two per record (header, body); a short one tells the stream the socket is drained (tls-bio.c). */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  /*
   * Servers issue one ticket per full handshake (stateful: tls.c sets SSL_OP_NO_TICKET on
   * server connections) and look sessions up in OpenSSL's cache, into which on_new_session
   * puts only a server's; clients keep theirs in the slots here.
   */
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_info_callback(ctx, on_handshake_state);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_BOTH | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_cache_size(ctx, SERVER_SESSIONS);
  SSL_CTX_set_timeout(ctx, SESSION_LIFETIME_S);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  return ctx;
}

/* tlsContext(keyPem, chainPem, bundlePem) -> id; throws ERR_VSOCKMESH_TLS naming the part that is wrong. */
static napi_value js_tls_context(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!core_args(env, info, 3, argv)) return NULL;
  size_t len[3] = {0, 0, 0};
  char *pem[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    pem[i] = arg_pem(env, argv[i], &len[i]);
    if (!pem[i]) break;
  }
  SSL_CTX *ctx = pem[2] ? make_context(env, pem[0], len[0], pem[1], len[1], pem[2], len[2]) : NULL;
  if (pem[0]) OPENSSL_cleanse(pem[0], len[0]); /* the private key */
  for (int i = 0; i < 3; i++) free(pem[i]);
  if (!ctx) return NULL;
  uint32_t id = 0;
  for (uint32_t i = 0; i < context_cap && !id; i++) {
    if (!contexts[i]) id = i + 1;
  }
  if (!id) {
    uint32_t cap = context_cap ? context_cap * 2 : 8;
    SSL_CTX **grown = realloc(contexts, cap * sizeof *grown);
    if (!grown) {
      SSL_CTX_free(ctx);
      return core_throw_errno(env, ENOMEM, "tlsContext");
    }
    memset(grown + context_cap, 0, (cap - context_cap) * sizeof *grown);
    id = context_cap + 1;
    contexts = grown;
    context_cap = cap;
  }
  napi_value v;
  if (!JS_OK(env, napi_create_uint32(env, id, &v))) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  contexts[id - 1] = ctx;
  context_count++;
  return v;
}

/* tlsContextFree(id): no new handshake uses it; connections made with it keep it until they close. Its sessions go. */
static napi_value js_tls_context_free(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t id;
  if (!core_args(env, info, 1, argv) || !core_arg_uint32(env, argv[0], CONTEXT_FREE_USAGE, &id)) return NULL;
  SSL_CTX *ctx = core_tls_context(id);
  if (!ctx) return NULL;
  for (size_t i = 0; i < SESSION_SLOTS; i++) {
    if (sessions[i].session && sessions[i].context_id == id) slot_clear(&sessions[i]);
  }
  contexts[id - 1] = NULL;
  context_count--;
  SSL_CTX_free(ctx);
  return NULL;
}

/* tlsCounts() -> [contexts, sessions kept by clients, tickets clients received ever, sessions cached by servers] (leak and cost checks). */
static napi_value js_tls_counts(napi_env env, napi_callback_info info) {
  (void)info;
  double cached = 0;
  for (uint32_t i = 0; i < context_cap; i++) {
    if (contexts[i]) cached += (double)SSL_CTX_sess_number(contexts[i]);
  }
  napi_value result, v;
  JS_CHECK(env, napi_create_array_with_length(env, 4, &result));
  JS_CHECK(env, napi_create_uint32(env, context_count, &v));
  JS_CHECK(env, napi_set_element(env, result, 0, v));
  JS_CHECK(env, napi_create_uint32(env, (uint32_t)session_count, &v));
  JS_CHECK(env, napi_set_element(env, result, 1, v));
  JS_CHECK(env, napi_create_uint32(env, tickets_received, &v));
  JS_CHECK(env, napi_set_element(env, result, 2, v));
  JS_CHECK(env, napi_create_double(env, cached, &v));
  JS_CHECK(env, napi_set_element(env, result, 3, v));
  return result;
}

bool core_tls_context_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      CORE_FUNCTION("tlsContext", js_tls_context),
      CORE_FUNCTION("tlsContextFree", js_tls_context_free),
      CORE_FUNCTION("tlsCounts", js_tls_counts),
  };
  return core_export_functions(env, exports, props, sizeof props / sizeof props[0]);
}
