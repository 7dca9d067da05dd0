/*
 * PROXY protocol v2 parser (proxy-header.h). Each step mirrors
 * decodeProxyHeader (proxy/proxy-protocol.ts) line for line, in its order: a
 * header the JavaScript decoder refuses is refused here with the same code,
 * and an incomplete one asks for the same byte count. The unit test
 * test/unit/native-proxy-header.test.ts runs both over the same vectors and
 * random and mutated bytes and requires equal answers.
 */
#include "proxy-header.h"

#include <string.h>

#include "exports.h"

static const uint8_t SIGNATURE[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const uint8_t V1_PREFIX[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
/* Address block length by family: unspec, inet, inet6, unix. */
static const size_t ADDRESS_LENGTH[4] = {0, 12, 36, 216};

static const char *const CODE_NAMES[] = {
    "ok",          "not_proxy_v2", "proxy_v1_unsupported", "bad_version", "bad_command", "bad_family",
    "too_large",   "short_address_block", "bad_tlv",       "bad_crc32c",  "not_stream",
};

const char *ph_code_name(enum ph_code code) {
  return (size_t)code < sizeof CODE_NAMES / sizeof CODE_NAMES[0] ? CODE_NAMES[code] : "unknown";
}

static uint32_t crc_table[256];
static bool crc_ready;

uint32_t ph_crc32c(const uint8_t *bytes, size_t len, size_t skip) {
  if (!crc_ready) {
    for (uint32_t n = 0; n < 256; n++) {
      uint32_t c = n;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0x82f63b78u ^ (c >> 1) : c >> 1;
      crc_table[n] = c;
    }
    crc_ready = true;
  }
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < len; i++) {
    uint8_t b = (i >= skip && i < skip + 4) ? 0 : bytes[i];
    crc = crc_table[(crc ^ b) & 0xffu] ^ (crc >> 8);
  }
  return crc ^ 0xffffffffu;
}

static enum ph_kind invalid(struct ph_result *out, enum ph_code code) {
  out->kind = PH_INVALID;
  out->code = code;
  return PH_INVALID;
}

static enum ph_kind incomplete(struct ph_result *out, size_t needed) {
  out->kind = PH_INCOMPLETE;
  out->needed = needed;
  return PH_INCOMPLETE;
}

static bool is_v1_prefix(const uint8_t *buf, size_t len) {
  size_t n = len < sizeof V1_PREFIX ? len : sizeof V1_PREFIX;
  return memcmp(buf, V1_PREFIX, n) == 0;
}

enum ph_kind ph_parse(const uint8_t *buf, size_t len, size_t max_length, bool stream_only, struct ph_result *out) {
  memset(out, 0, sizeof *out);
  if (max_length > PH_MAX_LENGTH) max_length = PH_MAX_LENGTH;
  size_t prefix = len < sizeof SIGNATURE ? len : sizeof SIGNATURE;
  for (size_t i = 0; i < prefix; i++) {
    if (buf[i] != SIGNATURE[i]) return invalid(out, is_v1_prefix(buf, len) ? PH_PROXY_V1_UNSUPPORTED : PH_NOT_PROXY_V2);
  }
  /* Each fixed field is checked as soon as its byte arrives. */
  if (len <= 12) return incomplete(out, PH_FIXED_LENGTH);
  uint8_t version_command = buf[12];
  if (version_command >> 4 != 2) return invalid(out, PH_BAD_VERSION);
  if ((version_command & 0x0f) > 1) return invalid(out, PH_BAD_COMMAND);
  bool proxy = (version_command & 0x0f) == 1;

  if (len <= 13) return incomplete(out, PH_FIXED_LENGTH);
  uint8_t family = buf[13] >> 4, transport = buf[13] & 0x0f;
  if (family > PH_UNIX || transport > PH_DGRAM) return invalid(out, PH_BAD_FAMILY);
  if (stream_only && proxy && ((family != PH_INET && family != PH_INET6) || transport != PH_STREAM)) return invalid(out, PH_NOT_STREAM);

  if (len <= 14) return incomplete(out, PH_FIXED_LENGTH);
  /* The high length byte alone can already put the header over the limit. */
  if (PH_FIXED_LENGTH + ((size_t)buf[14] << 8) > max_length) return invalid(out, PH_TOO_LARGE);
  if (len < PH_FIXED_LENGTH) return incomplete(out, PH_FIXED_LENGTH);

  size_t payload = ((size_t)buf[14] << 8) | buf[15];
  size_t length = PH_FIXED_LENGTH + payload;
  if (length > max_length) return invalid(out, PH_TOO_LARGE);
  /* LOCAL carries no meaningful addresses; its block is skipped whatever the family says. */
  size_t address_length = proxy ? ADDRESS_LENGTH[family] : 0;
  if (payload < address_length) return invalid(out, PH_SHORT_ADDRESS_BLOCK);
  if (len < length) return incomplete(out, length);

  size_t tlv_start = PH_FIXED_LENGTH + (proxy ? address_length : (ADDRESS_LENGTH[family] < payload ? ADDRESS_LENGTH[family] : payload));
  size_t crc_offset = 0;
  bool crc = false;
  for (size_t at = tlv_start; at < length;) {
    if (length - at < 3) return invalid(out, PH_BAD_TLV);
    uint8_t type = buf[at];
    size_t value_length = ((size_t)buf[at + 1] << 8) | buf[at + 2];
    if (at + 3 + value_length > length) return invalid(out, PH_BAD_TLV);
    if (type == PH_TLV_CRC32C) {
      if (value_length != 4) return invalid(out, PH_BAD_TLV);
      crc = true;
      crc_offset = at + 3; /* the last CRC32C TLV is the one checked, as in JavaScript */
    }
    at += 3 + value_length;
  }
  if (crc) {
    const uint8_t *c = buf + crc_offset;
    uint32_t expected = ((uint32_t)c[0] << 24) | ((uint32_t)c[1] << 16) | ((uint32_t)c[2] << 8) | c[3];
    if (ph_crc32c(buf, length, crc_offset) != expected) return invalid(out, PH_BAD_CRC32C);
  }
  out->kind = PH_HEADER;
  out->length = length;
  out->proxy = proxy;
  out->family = family;
  out->transport = transport;
  out->tlv_start = tlv_start;
  return PH_HEADER;
}

/*
 * proxyHeaderDecode(buffer, maxLength, streamOnly) -> the parse as an array
 * (tests run it beside decodeProxyHeader): ["incomplete", needed],
 * ["invalid", code], or ["header", length, proxy, family, transport,
 * tlvType, valueOffset, valueLength, ...] with every TLV in order.
 */
static napi_value js_proxy_header_decode(napi_env env, napi_callback_info info) {
  static const char usage[] = "proxyHeaderDecode(buffer, maxLength, streamOnly)";
  napi_value argv[3];
  char *data;
  size_t len;
  uint32_t max_length;
  bool stream_only;
  if (!core_args(env, info, 3, argv) || !core_arg_buffer(env, argv[0], usage, false, &data, &len) || !core_arg_uint32(env, argv[1], usage, &max_length) ||
      !core_arg_bool(env, argv[2], usage, &stream_only)) {
    return NULL;
  }
  const uint8_t *buf = (const uint8_t *)data;
  struct ph_result r;
  ph_parse(buf, len, max_length, stream_only, &r);
  napi_value result, v;
  JS_CHECK(env, napi_create_array(env, &result));
  uint32_t i = 0;
  const char *kind = r.kind == PH_INCOMPLETE ? "incomplete" : r.kind == PH_INVALID ? "invalid" : "header";
  JS_CHECK(env, napi_create_string_utf8(env, kind, NAPI_AUTO_LENGTH, &v));
  JS_CHECK(env, napi_set_element(env, result, i++, v));
  if (r.kind == PH_INVALID) {
    JS_CHECK(env, napi_create_string_utf8(env, ph_code_name(r.code), NAPI_AUTO_LENGTH, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    return result;
  }
  if (r.kind == PH_INCOMPLETE) {
    JS_CHECK(env, napi_create_uint32(env, (uint32_t)r.needed, &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
    return result;
  }
  uint32_t fields[4] = {(uint32_t)r.length, r.proxy, r.family, r.transport};
  for (size_t f = 0; f < 4; f++) {
    JS_CHECK(env, napi_create_uint32(env, fields[f], &v));
    JS_CHECK(env, napi_set_element(env, result, i++, v));
  }
  for (size_t at = r.tlv_start; at < r.length;) {
    uint32_t value_length = ((uint32_t)buf[at + 1] << 8) | buf[at + 2];
    uint32_t tlv[3] = {buf[at], (uint32_t)(at + 3), value_length};
    for (size_t f = 0; f < 3; f++) {
      JS_CHECK(env, napi_create_uint32(env, tlv[f], &v));
      JS_CHECK(env, napi_set_element(env, result, i++, v));
    }
    at += 3 + value_length;
  }
  return result;
}

bool core_proxy_header_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {CORE_FUNCTION("proxyHeaderDecode", js_proxy_header_decode)};
  return core_export_functions(env, exports, props, 1);
}
