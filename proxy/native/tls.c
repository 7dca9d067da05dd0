/*
 * The TLS handshake job: a socket of the core (accepted, or connected) does a
 * non-blocking TLS 1.3 handshake on the epoll loop, under a deadline, with the
 * identity a context id names (tls-context.c). Nothing of the peer's stream
 * is read past the handshake: on success the socket is idle again, TLS
 * attached, and JavaScript gets the peer's identity (the one URI SAN of its
 * verified certificate) to decide before any byte is relayed; read.c and
 * relay.c then move bytes through it (stream.c).
 *
 * A server first peeks at the peer's first byte: a peer that does not start
 * a TLS handshake is reported as plain_text, nothing consumed, so a
 * permissive listener can read a plain PROXY v2 header instead (and a strict
 * one says why it refused).
 *
 * A client may send bytes in the clear first (a PROXY v2 header, for peers
 * such as HAProxy that read it before TLS).
 *
 * The callback runs exactly once unless JS closes the socket first; after a
 * failure the socket is idle and JS closes it (it logs the reason first).
 */
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exports.h"
#include "trim.h"

#define TLS_START_USAGE "tlsStart(fd, contextId, server, sessionKey, plainPreamble, timeoutMs, callback)"
#define MAX_SESSION_KEY 512
#define TLS_RECORD_HANDSHAKE 0x16

void core_tls_free(core_tls *t) {
  if (!t) return;
  /* However the connection ended (a reset, no close_notify), its session stays resumable:
     SSL_free would otherwise drop it from a server's cache, as a stateless ticket never was. */
  if (t->ssl && SSL_is_server(t->ssl)) SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
  SSL_free(t->ssl);
  free(t);
}

/* Why a verified chain was refused, in the words logs and counters use. */
static const char *verify_reason(long result) {
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "not_yet_valid";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return "unknown_ca";
    default:
      return "bad_certificate";
  }
}

/* The reason for a failed handshake, and a detail for the log. */
static const char *failure_reason(SSL *ssl, int ssl_error, int sys_errno, char *detail, size_t size) {
  if (ssl_error == SSL_ERROR_ZERO_RETURN || (ssl_error == SSL_ERROR_SYSCALL && sys_errno == 0)) {
    snprintf(detail, size, "the peer closed during the TLS handshake");
    return "peer_closed";
  }
  if (ssl_error == SSL_ERROR_SYSCALL) {
    snprintf(detail, size, "socket error during the TLS handshake: %s", strerror(sys_errno));
    return "peer_error";
  }
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    snprintf(detail, size, "peer certificate refused: %s", X509_verify_cert_error_string(verify));
    return verify_reason(verify);
  }
  unsigned long e = ERR_peek_error();
  char text[256] = "no detail";
  if (e) ERR_error_string_n(e, text, sizeof text);
  snprintf(detail, size, "TLS handshake failed: %s", text);
  int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
  if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) return "no_certificate";
  if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) return "peer_closed";
  if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION) return "protocol_version";
  /* An alert from the peer: it refused us (our certificate, most often). */
  if (reason > SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) return "peer_refused";
  return "handshake_failed";
}

/* The peer's one URI SAN (copied into buf), or the reason there is not exactly one. */
static const char *peer_identity(SSL *ssl, char *buf, size_t size) {
  X509 *peer = SSL_get0_peer_certificate(ssl);
  if (!peer) {
    snprintf(buf, size, "the peer presented no certificate");
    return "no_certificate";
  }
  GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
  int uris = 0;
  const char *problem = NULL;
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
    const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_URI) continue;
    if (++uris > 1) continue;
    const ASN1_IA5STRING *uri = name->d.uniformResourceIdentifier;
    size_t len = (size_t)ASN1_STRING_length(uri);
    const unsigned char *data = ASN1_STRING_get0_data(uri);
    if (len >= size || memchr(data, 0, len)) problem = "bad_uri_san";
    else {
      memcpy(buf, data, len);
      buf[len] = 0;
    }
  }
  GENERAL_NAMES_free(names);
  ERR_clear_error();
  if (uris == 0) problem = "no_uri_san";
  else if (uris > 1) problem = "several_uri_sans";
  if (problem) snprintf(buf, size, "the peer certificate must carry exactly one URI SAN (%d, %s)", uris, problem);
  return problem;
}

/* The peer certificate's serial number in hex (logs tell a rotated certificate from the last one). */
static void peer_serial(SSL *ssl, char *buf, size_t size) {
  X509 *peer = SSL_get0_peer_certificate(ssl);
  BIGNUM *bn = peer ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL) : NULL;
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  if (hex) snprintf(buf, size, "%s", hex);
  OPENSSL_free(hex);
  BN_free(bn);
  ERR_clear_error();
}

/* Ends the job: the socket is idle (TLS attached, or not for plain_text); the callback runs once. */
static void handshake_finish(core_sock *s, const char *reason, const char *text, bool resumed) {
  napi_ref cb = s->callback;
  s->callback = NULL;
  core_sock_timer_stop(s);
  core_sock_set_job(s, SOCK_IDLE, NULL);
  core_trim_note(); /* the handshake's buffers are freed */
  if (reason && strcmp(reason, "plain_text") == 0) {
    core_tls_free(s->tls); /* the peer speaks plain: its bytes are read as they are */
    s->tls = NULL;
  }
  napi_handle_scope scope;
  NAPI_MUST(napi_open_handle_scope(core_env, &scope));
  napi_value argv[5];
  if (reason) NAPI_MUST(napi_create_string_utf8(core_env, reason, NAPI_AUTO_LENGTH, &argv[0]));
  else NAPI_MUST(napi_get_null(core_env, &argv[0]));
  NAPI_MUST(napi_create_string_utf8(core_env, text, NAPI_AUTO_LENGTH, &argv[1]));
  NAPI_MUST(napi_get_boolean(core_env, resumed, &argv[2]));
  const char *version = reason || !s->tls ? "" : SSL_get_version(s->tls->ssl);
  NAPI_MUST(napi_create_string_utf8(core_env, version, NAPI_AUTO_LENGTH, &argv[3]));
  char serial[2 * 20 + 1] = "";
  if (!reason) peer_serial(s->tls->ssl, serial, sizeof serial);
  NAPI_MUST(napi_create_string_utf8(core_env, serial, NAPI_AUTO_LENGTH, &argv[4]));
  core_call(cb, 5, argv);
  core_delete_ref(&cb);
  NAPI_MUST(napi_close_handle_scope(core_env, scope));
}

/* Server: whether the peer opens with a TLS record; false while unknown (the next edge says). */
static bool peeked_tls(core_sock *s) {
  unsigned char first;
  ssize_t n;
  do n = recv(s->fd, &first, 1, MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) {
    s->readable = 0;
    return false;
  }
  if (n < 0) {
    char detail[160];
    snprintf(detail, sizeof detail, "socket error before the TLS handshake: %s", strerror(errno));
    handshake_finish(s, "peer_error", detail, false);
    return false;
  }
  if (n == 0) {
    handshake_finish(s, "peer_closed", "the peer closed before sending anything", false);
    return false;
  }
  if (first != TLS_RECORD_HANDSHAKE) {
    handshake_finish(s, "plain_text", "the peer did not start a TLS handshake", false);
    return false;
  }
  s->tls->peek_plain = 0;
  return true;
}

/* Client: writes the plain preamble; false while some is left (the next edge says) or the job ended. */
static bool preamble_sent(core_sock *s) {
  while (s->out_len > 0) {
    ssize_t w = send(s->fd, s->out + s->out_off, s->out_len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      s->writable = 0;
      return false;
    }
    if (w < 0) {
      char detail[160];
      snprintf(detail, sizeof detail, "socket error before the TLS handshake: %s", strerror(errno));
      handshake_finish(s, "peer_error", detail, false);
      return false;
    }
    s->out_off += (size_t)w;
    s->out_len -= (size_t)w;
  }
  free(s->out);
  s->out = NULL;
  s->out_off = 0;
  return true;
}

static void on_handshake_ready(core_sock *s) {
  core_tls *t = s->tls;
  if (t->peek_plain && !peeked_tls(s)) return;
  if (s->out && !preamble_sent(s)) return;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  int sys_errno = errno;
  char text[512];
  if (r == 1) {
    t->handshaken = 1;
    /* Read ahead may have taken the peer's first bytes with its last handshake message, in a call
       that began without a readable edge: they wait in OpenSSL, and no edge will announce them. */
    if (SSL_has_pending(t->ssl)) s->readable = 1;
    const char *problem = peer_identity(t->ssl, text, sizeof text);
    handshake_finish(s, problem, text, SSL_session_reused(t->ssl) == 1);
    return;
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    if (e == SSL_ERROR_WANT_READ) s->readable = 0;
    else s->writable = 0;
    ERR_clear_error();
    return;
  }
  const char *reason = failure_reason(t->ssl, e, sys_errno, text, sizeof text);
  ERR_clear_error();
  handshake_finish(s, reason, text, false);
}

static void on_handshake_timeout(uv_timer_t *timer) { handshake_finish(timer->data, "timeout", "no TLS handshake within the deadline", false); }

/* A string argument that may be null (no session kept). */
static bool session_key_arg(napi_env env, napi_value v, char *buf, size_t size, bool *present) {
  napi_valuetype type;
  if (!JS_OK(env, napi_typeof(env, v, &type))) return false;
  *present = type != napi_null && type != napi_undefined;
  return !*present || core_arg_string(env, v, TLS_START_USAGE, buf, size);
}

static core_tls *tls_new(core_sock *s, SSL_CTX *ctx, uint32_t context_id, bool server, const char *session_key) {
  size_t key_size = session_key ? strlen(session_key) + 1 : 0;
  core_tls *t = calloc(1, sizeof *t + key_size);
  if (!t) return NULL;
  t->context_id = context_id;
  t->fd = s->fd;
  if (session_key) {
    memcpy(t->session_key, session_key, key_size);
    t->keyed = 1;
  }
  t->ssl = SSL_new(ctx);
  BIO *bio = t->ssl ? core_tls_bio(t) : NULL;
  if (!bio) {
    core_tls_free(t);
    ERR_clear_error();
    return NULL;
  }
  SSL_set_bio(t->ssl, bio, bio); /* one reference for both directions, freed with the SSL */
  if (server) {
    SSL_set_options(t->ssl, SSL_OP_NO_TICKET); /* TLS 1.3: stateful tickets, naming a session of the context's cache (tls-context.c) */
    SSL_set_accept_state(t->ssl);
    return t;
  }
  SSL_set_connect_state(t->ssl);
  SSL_SESSION *session = t->keyed ? core_tls_session_get(context_id, session_key) : NULL;
  if (session) {
    SSL_set_session(t->ssl, session); /* takes its own reference */
    SSL_SESSION_free(session);
  }
  return t;
}

/*
 * tlsStart(fd, contextId, server, sessionKey|null, plainPreamble: Buffer|null, timeoutMs,
 *          callback(reason|null, identity|detail, resumed, version, serial))
 * fd: an idle socket of the core. Success: (null, peer URI SAN, resumed, "TLSv1.3", peer serial hex).
 * Failure: (reason, detail); the socket is idle and JS closes it.
 * Server: a peer that does not start TLS is ("plain_text", detail) with nothing read, TLS detached.
 * sessionKey (client): resume with, and keep tickets under, this peer's name.
 * plainPreamble (client): written in the clear before the ClientHello.
 */
static napi_value js_tls_start(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t fd;
  uint32_t context_id, timeout_ms;
  bool server, keyed;
  char key[MAX_SESSION_KEY];
  char *preamble;
  size_t preamble_len;
  if (!core_args(env, info, 7, argv) || !core_arg_int32(env, argv[0], TLS_START_USAGE, &fd) || !core_arg_uint32(env, argv[1], TLS_START_USAGE, &context_id) ||
      !core_arg_bool(env, argv[2], TLS_START_USAGE, &server) || !session_key_arg(env, argv[3], key, sizeof key, &keyed) ||
      !core_arg_buffer(env, argv[4], TLS_START_USAGE, true, &preamble, &preamble_len) || !core_arg_uint32(env, argv[5], TLS_START_USAGE, &timeout_ms)) {
    return NULL;
  }
  core_sock *s = core_sock_get(fd);
  if (!s || s->mode != SOCK_IDLE || s->tls || s->out_len > 0) {
    NAPI_MUST(napi_throw_error(env, "EBADF", "tlsStart: not an idle plain socket of the core"));
    return NULL;
  }
  if (server && preamble_len > 0) return core_throw_usage(env, TLS_START_USAGE);
  SSL_CTX *ctx = core_tls_context(context_id);
  if (!ctx) {
    NAPI_MUST(napi_throw_error(env, "EINVAL", "tlsStart: no such TLS context"));
    return NULL;
  }
  napi_ref cb;
  if (!core_arg_callback(env, argv[6], TLS_START_USAGE, &cb)) return NULL;
  core_tls *t = tls_new(s, ctx, context_id, server, keyed ? key : NULL);
  if (!t || (preamble_len > 0 && core_sock_hold_out(s, preamble, preamble_len) != 0)) {
    core_tls_free(t);
    core_delete_ref(&cb);
    return core_throw_errno(env, ENOMEM, "tlsStart");
  }
  int err = core_sock_timer_start(s, on_handshake_timeout, timeout_ms);
  if (err) {
    free(s->out);
    s->out = NULL;
    s->out_len = 0;
    core_tls_free(t);
    core_delete_ref(&cb);
    return core_throw_errno(env, -err, "tlsStart");
  }
  t->peek_plain = server;
  s->tls = t;
  s->callback = cb;
  core_sock_set_job(s, SOCK_HANDSHAKE, on_handshake_ready);
  core_sock_kick(s); /* the client speaks first; a server may have the ClientHello already */
  return NULL;
}

bool core_tls_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("tlsStart", js_tls_start)};
  return core_export_functions(env, exports, props, 1);
}
