/*
 * V8's API for the addons' few C++ files (settle.cc, server-trim.cc): V8's
 * headers are not written for this core's warnings, so they are included
 * with those warnings off, here only.
 */
#ifndef VSOCKMESH_V8_API_H
#define VSOCKMESH_V8_API_H

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wfloat-conversion"
#include <v8.h>
#pragma GCC diagnostic pop

#endif
