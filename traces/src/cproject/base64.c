#include <string.h>
#include "util.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encode(const unsigned char *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int val(char c) {
    const char *p = strchr(alphabet, c);
    return (c && p) ? (int)(p - alphabet) : -1;
}

size_t base64_decode(const char *in, size_t n, unsigned char *out) {
    size_t o = 0;
    for (size_t i = 0; i + 3 < n; i += 4) {
        int a = val(in[i]), b = val(in[i + 1]), c = val(in[i + 2]), d = val(in[i + 3]);
        if (a < 0 || b < 0) break;
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
        if (c >= 0) out[o++] = (unsigned char)((b << 4) | (c >> 2));
        if (d >= 0) out[o++] = (unsigned char)((c << 6) | d);
    }
    return o;
}
