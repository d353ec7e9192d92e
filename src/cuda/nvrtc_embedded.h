/* Kernel headers embedded at build time (cmake/embed_sources.cmake) for NVRTC. */
#ifndef FI_CUDA_NVRTC_EMBEDDED_H
#define FI_CUDA_NVRTC_EMBEDDED_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fi_nvrtc_embedded {
    const char *name; /* as included, e.g. "cuda/device_common.cuh" */
    const char *text;
} fi_nvrtc_embedded;

extern const fi_nvrtc_embedded fi_nvrtc_headers[];
extern const int fi_nvrtc_n_headers;

#ifdef __cplusplus
}
#endif
#endif
