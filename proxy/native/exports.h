/*
 * What each file above the event loop adds to the module's exports; module.c
 * calls them all at load. Each returns false with a JS exception pending.
 */
#ifndef VSOCKMESH_EXPORTS_H
#define VSOCKMESH_EXPORTS_H

#include "js.h"

bool core_sockets_register(napi_env env, napi_value exports);      /* sockets.c: close, reset, ref, openCount, pendingBytes */
bool core_listen_register(napi_env env, napi_value exports);       /* listen.c: listen, acceptFailures */
bool core_connect_register(napi_env env, napi_value exports);      /* connect.c: connect */
bool core_read_register(napi_env env, napi_value exports);         /* read.c: readStart, readStop */
bool core_relay_register(napi_env env, napi_value exports);        /* relay.c: relay, relayBytes, relayAbort, RELAY_OUTCOMES */
bool core_duplex_register(napi_env env, napi_value exports);       /* duplex.c: duplexOpen, duplexRead, duplexWrite, duplexShutdown */
bool core_vsock_register(napi_env env, napi_value exports);        /* vsock.c: localCid, VMADDR_CID_* */
bool core_original_dst_register(napi_env env, napi_value exports); /* original-dst.c: originalDst */
bool core_tls_context_register(napi_env env, napi_value exports);  /* tls-context.c: tlsContext, tlsContextFree, tlsCounts */
bool core_tls_register(napi_env env, napi_value exports);          /* tls.c: tlsStart */
bool core_exec_register(napi_env env, napi_value exports);         /* exec.c: exec */
bool core_trim_register(napi_env env, napi_value exports);         /* trim.c: trimCount */
bool core_settle_register(napi_env env, napi_value exports);       /* settle.cc: settleMemory, settleCount */
bool core_proxy_header_register(napi_env env, napi_value exports); /* proxy-header.c: proxyHeaderDecode */
bool core_warm_register(napi_env env, napi_value exports);         /* warm.c: warmGeneration, warmBump, warmInstall(Outbound), warmLookup(Outbound), warmForget, warmListen(Outbound), warmClose */

#endif
