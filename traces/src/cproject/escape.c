#include <stdio.h>
#include "util.h"

void json_escape(const char *in, strbuf *out) {
    char tmp[8];
    sb_append(out, "\"");
    for (; *in; in++) {
        switch (*in) {
        case '"': sb_append(out, "\\\""); break;
        case '\\': sb_append(out, "\\\\"); break;
        case '\n': sb_append(out, "\\n"); break;
        case '\t': sb_append(out, "\\t"); break;
        default:
            if ((unsigned char)*in < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned char)*in);
                sb_append(out, tmp);
            } else {
                tmp[0] = *in; tmp[1] = '\0';
                sb_append(out, tmp);
            }
        }
    }
    sb_append(out, "\"");
}
