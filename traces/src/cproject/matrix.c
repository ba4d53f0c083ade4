#include "util.h"

void mat_mul(const double *a, const double *b, double *c, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
}

double mat_trace(const double *a, int n) {
    double t = 0;
    for (int i = 0; i < n; i++) t += a[i * n + i];
    return t;
}
