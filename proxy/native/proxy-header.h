/*
 * PROXY protocol v2 header parser of the core: decides exactly as
 * decodeProxyHeader in proxy/proxy-protocol.ts (same checks, same order, same
 * error codes, same byte counts asked for), so the inbound warm path parses
 * the headers JavaScript would. Pure: no I/O, no allocation.
 */
#ifndef VSOCKMESH_PROXY_HEADER_H
#define VSOCKMESH_PROXY_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PH_FIXED_LENGTH 16u
#define PH_MAX_LENGTH (16u + 0xffffu)
#define PH_TLV_CRC32C 0x03u

enum ph_kind { PH_INCOMPLETE, PH_HEADER, PH_INVALID };

/* The JavaScript decoder's HeaderErrorCode, in the order ph_code_name names them. */
enum ph_code {
  PH_OK,
  PH_NOT_PROXY_V2,
  PH_PROXY_V1_UNSUPPORTED,
  PH_BAD_VERSION,
  PH_BAD_COMMAND,
  PH_BAD_FAMILY,
  PH_TOO_LARGE,
  PH_SHORT_ADDRESS_BLOCK,
  PH_BAD_TLV,
  PH_BAD_CRC32C,
  PH_NOT_STREAM,
};

/* Family and transport as the header's byte 13 numbers them. */
enum ph_family { PH_UNSPEC, PH_INET, PH_INET6, PH_UNIX };
enum ph_transport { PH_T_UNSPEC, PH_STREAM, PH_DGRAM };

struct ph_result {
  enum ph_kind kind;
  enum ph_code code;  /* PH_INVALID */
  size_t needed;      /* PH_INCOMPLETE: total bytes needed before deciding */
  size_t length;      /* PH_HEADER: bytes the header occupies */
  bool proxy;         /* PH_HEADER: PROXY (true) or LOCAL */
  uint8_t family;     /* PH_HEADER: enum ph_family */
  uint8_t transport;  /* PH_HEADER: enum ph_transport */
  size_t tlv_start;   /* PH_HEADER: offset of the first TLV (well-formed up to length) */
};

/*
 * Parses a header from the start of buf (len bytes). max_length: the largest
 * whole header accepted, clamped to PH_MAX_LENGTH. stream_only: a PROXY
 * header must be TCP over IPv4 or IPv6 (LOCAL passes whatever it says).
 * Returns out->kind.
 */
enum ph_kind ph_parse(const uint8_t *buf, size_t len, size_t max_length, bool stream_only, struct ph_result *out);

/* The JavaScript decoder's name of a code ("not_proxy_v2", ...). */
const char *ph_code_name(enum ph_code code);

/* CRC-32C (Castagnoli) of bytes, with the 4 bytes at skip (if skip + 4 <= len) taken as zero. */
uint32_t ph_crc32c(const uint8_t *bytes, size_t len, size_t skip);

#endif
