/*
 * smelter.h - the C ABI of Smelter, weight-space model merging kernels for CPU and CUDA.
 *
 * This header is the only boundary between the native library and its callers (Java through
 * FFM, C, Python ctypes). It uses plain C types only: no C++ types or exceptions cross it.
 *
 * Conventions
 *  - Every function that can fail returns a smelter_status; SMELTER_OK is 0. On failure,
 *    smelter_last_error() returns a message for the calling thread (valid until that thread's
 *    next Smelter call).
 *  - Structs passed in carry their own size in `struct_size` so fields can be appended in later
 *    ABI versions without breaking callers built against older headers. Always initialise them
 *    with the matching *_init function.
 *  - A context is one backend instance (the CPU thread pool, or one CUDA device with its own
 *    stream). Calls on one context run in order; calls on different contexts may overlap.
 *    A context must not be used from two threads at once.
 *  - Device work is asynchronous with respect to the host only where a function says so;
 *    smelter_synchronize() waits for everything queued on a context.
 */
#ifndef SMELTER_H
#define SMELTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SMELTER_API __declspec(dllexport)
#else
#define SMELTER_API __attribute__((visibility("default")))
#endif

/** Bumped on every incompatible change; callers check it against the value they were built with. */
#define SMELTER_ABI_VERSION 1

/** Most models one merge call accepts. */
#define SMELTER_MAX_MODELS 64

typedef enum smelter_status {
    SMELTER_OK = 0,
    SMELTER_ERR_INVALID_ARGUMENT = 1, /* null pointer, size or dtype mismatch, value out of range */
    SMELTER_ERR_UNSUPPORTED = 2,      /* valid request this build or backend cannot do */
    SMELTER_ERR_OUT_OF_MEMORY = 3,    /* host or device allocation failed */
    SMELTER_ERR_NO_DEVICE = 4,        /* no CUDA driver or no such device */
    SMELTER_ERR_DEVICE = 5,           /* a CUDA runtime error; the message names it */
    SMELTER_ERR_INTERNAL = 6          /* a bug in Smelter; please report the message */
} smelter_status;

typedef enum smelter_dtype {
    SMELTER_F32 = 0,
    SMELTER_F16 = 1,
    SMELTER_BF16 = 2
} smelter_dtype;

typedef enum smelter_backend {
    SMELTER_BACKEND_CPU = 0,
    SMELTER_BACKEND_CUDA = 1
} smelter_backend;

/** Where a tensor's bytes live. A CUDA context accepts both (host tensors are staged through
 *  device memory); a CPU context accepts host memory only. */
typedef enum smelter_memory {
    SMELTER_MEMORY_HOST = 0,
    SMELTER_MEMORY_DEVICE = 1
} smelter_memory;

/** A flat view of tensor data owned by the caller. */
typedef struct smelter_tensor {
    void *data;
    int64_t count;  /* number of elements */
    int32_t dtype;  /* smelter_dtype */
    int32_t memory; /* smelter_memory */
} smelter_tensor;

typedef struct smelter_context smelter_context;
typedef struct smelter_topk smelter_topk;

/* ---- library, errors, devices ---------------------------------------------------------- */

SMELTER_API uint32_t smelter_abi_version(void);
/** Version and build features, e.g. "smelter 0.1.0 (cpu avx2, cuda sm_90)". Static storage. */
SMELTER_API const char *smelter_build_info(void);
/** Name of a status code. Static storage. */
SMELTER_API const char *smelter_status_string(smelter_status status);
/** Message of the calling thread's last failed call ("" if none). Thread-local storage. */
SMELTER_API const char *smelter_last_error(void);

/** Number of devices of a backend: 1 for CPU; CUDA devices visible (0 when no driver/GPU). */
SMELTER_API smelter_status smelter_device_count(smelter_backend backend, int32_t *count);
/** Writes a NUL-terminated device description ("NVIDIA H100 80GB HBM3, 132 SMs, 79 GiB"). */
SMELTER_API smelter_status smelter_device_name(smelter_backend backend, int32_t device, char *buffer,
                                               size_t capacity);

/* ---- contexts and memory ----------------------------------------------------------------- */

/** Creates a context. `device` is the CUDA device ordinal (ignored for CPU); `threads` is the CPU
 *  worker count (0 = one per available core; ignored for CUDA). */
SMELTER_API smelter_status smelter_context_create(smelter_backend backend, int32_t device,
                                                  int32_t threads, smelter_context **out);
/** Waits for queued work, then releases the context. NULL is a no-op. */
SMELTER_API smelter_status smelter_context_destroy(smelter_context *ctx);
/** Waits until all work queued on the context has finished; reports asynchronous errors. */
SMELTER_API smelter_status smelter_synchronize(smelter_context *ctx);
/** Caps the bytes one smelter_merge call works on at once: its inputs, output, select and element
 *  weights, and RANKED's ranks. A larger merge runs in pieces (whole RANKED rows), each pass over
 *  the tensor (thresholds, L1 sums, the merge) visiting them in order; the results are bit-identical
 *  to one piece. 0 (the default): no cap on the CPU, the free device memory on CUDA (host tensors
 *  are staged there). Tensors larger than device memory merge this way. The other calls keep to the
 *  cap too, bit-identical to one piece: smelter_pair_stats in whole 65,536-element chunks,
 *  smelter_topk_add in pieces, smelter_product in blocks of whole 64 x 64 output tiles and
 *  smelter_column_stats in blocks of columns (host matrices), each block with every row of the
 *  reduction; a reduction too long for one block fails with SMELTER_ERR_OUT_OF_MEMORY. */
SMELTER_API smelter_status smelter_context_set_memory_limit(smelter_context *ctx, int64_t bytes);

/** Allocates `bytes` of memory of the given kind for use with this context. On CUDA, HOST memory
 *  is page-locked (fast asynchronous copies); on CPU, DEVICE memory is refused. 64-byte aligned. */
SMELTER_API smelter_status smelter_alloc(smelter_context *ctx, smelter_memory memory, size_t bytes,
                                         void **out);
SMELTER_API smelter_status smelter_free(smelter_context *ctx, smelter_memory memory, void *ptr);
/** Copies bytes between host and device memory, queued on the context's stream. Host memory
 *  that is not page-locked makes the copy synchronous. */
SMELTER_API smelter_status smelter_copy(smelter_context *ctx, void *dst, smelter_memory dst_memory,
                                        const void *src, smelter_memory src_memory, size_t bytes);

/* ---- merging ----------------------------------------------------------------------------- */

typedef enum smelter_method {
    /** out = sum_i w_i x_i  (divided by sum_i w_i when normalize). No base model. */
    SMELTER_METHOD_LINEAR = 0,
    /** Generalised task arithmetic (Task Arithmetic, TIES, DARE-linear, DARE-TIES):
     *  delta_i = x_i - base, sparsified, weighted, optionally sign-elected, summed;
     *  out = base + lambda * merged. */
    SMELTER_METHOD_TASK_ARITHMETIC = 1,
    /** out = population variance over the models of delta_i = x_i - base, in f32:
     *  mean = (sum_i delta_i) / n, out = (sum_i (delta_i - mean)^2) / n, sums in model order.
     *  The selection score of SCE (see smelter_merge_params.select). */
    SMELTER_METHOD_VARIANCE = 2
} smelter_method;

typedef enum smelter_sparsify {
    SMELTER_SPARSIFY_NONE = 0,
    /** TIES trim: keep delta_i where key(|delta_i|) >= threshold_i; the threshold is the k-th
     *  largest key with k = floor(density_i * count), so every element tied at the threshold is
     *  kept (k = 0 keeps nothing). See smelter_merge_params.key_dtype and .thresholds. */
    SMELTER_SPARSIFY_MAGNITUDE = 1,
    /** DARE: keep delta_i with probability density_i, drawn from Philox4x32-10 keyed by
     *  (seed, tensor_key) with counter (element index / 4, model index, stream 0). */
    SMELTER_SPARSIFY_RANDOM = 2,
    /** Breadcrumbs (mergekit magnitude_outliers): drop the largest gamma_i and the smallest
     *  |delta_i|, keeping density_i. With N elements, top = floor(gamma_i N), kept = floor(density_i N)
     *  (top shrinks to N - kept when they overlap): keep thresholds[i] <= key <= upper_thresholds[i],
     *  where the lower key is the (top + kept)-th largest and the upper the (top + 1)-th largest
     *  (0xFFFFFFFF when top = 0). Elements tied with either key are kept. */
    SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS = 3,
    /** DELLA (mergekit della_magprune): within each row of row_length elements, |delta_i| is ranked
     *  r = 0 (smallest) .. L-1 (ties by position), and the element is kept with probability
     *  p = (density_i - epsilon_i) + 2 epsilon_i r / (L - 1) (density_i for L = 1): kept when its
     *  24 Philox bits (as RANDOM, stream 1) are below lo + floor((hi - lo) r / (L - 1)), with
     *  lo = ceil((density_i - epsilon_i) 2^24), hi = ceil((density_i + epsilon_i) 2^24), in integers.
     *  INVERSE_DENSITY rescales each kept element by 2^24 / its keep limit (1/p, the DELLA paper). */
    SMELTER_SPARSIFY_RANKED = 4
} smelter_sparsify;

typedef enum smelter_consensus {
    SMELTER_CONSENSUS_NONE = 0,
    /** TIES sign election by mass: sign of sum_i w_i * delta_i (mergekit "sum"). */
    SMELTER_CONSENSUS_SUM = 1,
    /** Sign election by count: sign of sum_i sign(w_i * delta_i) (mergekit "count"). */
    SMELTER_CONSENSUS_COUNT = 2,
    /** Sign election by the unweighted sum of the kept deltas, sum_i delta_i (SCE's erase step);
     *  the agreeing deltas are then weighted as with SUM. */
    SMELTER_CONSENSUS_SUM_UNWEIGHTED = 3
} smelter_consensus;

/** What an elected sum of exactly zero elects. */
typedef enum smelter_zero_sign {
    SMELTER_ZERO_SIGN_POSITIVE = 0, /* mergekit: zero goes to + */
    SMELTER_ZERO_SIGN_NEGATIVE = 1, /* e.g. TIES paper when the overall sum is negative */
    SMELTER_ZERO_SIGN_NONE = 2      /* nothing is elected: merged delta is 0 there */
} smelter_zero_sign;

typedef enum smelter_rescale {
    SMELTER_RESCALE_NONE = 0,
    /** kept deltas times 1/density_i (DARE paper; mergekit rescale=true). */
    SMELTER_RESCALE_INVERSE_DENSITY = 1,
    /** kept deltas times ||delta_i||_1 / ||kept delta_i||_1 over the tensor, or 1 when either norm
     *  is below 1e-7 (mergekit's rescale=true: rescale_norm=l1 with its eps). */
    SMELTER_RESCALE_L1 = 2
} smelter_rescale;

typedef struct smelter_merge_params {
    uint32_t struct_size;       /* sizeof(smelter_merge_params) */
    int32_t method;             /* smelter_method */
    int32_t n_models;           /* 1..SMELTER_MAX_MODELS */
    const smelter_tensor *models; /* n_models tensors, same count and dtype */
    const smelter_tensor *base; /* TASK_ARITHMETIC: same count and dtype as the models */
    const float *weights;       /* n_models, host memory; NULL = all 1 */
    const float *densities;     /* n_models in (0, 1], host memory; NULL = all 1 (see densities_f64) */
    int32_t sparsify;           /* smelter_sparsify */
    int32_t consensus;          /* smelter_consensus */
    int32_t zero_sign;          /* smelter_zero_sign */
    int32_t rescale;            /* smelter_rescale */
    int32_t normalize;          /* divide by the sum of the (agreeing) weights */
    float lambda;               /* scale of the merged delta; default 1 */
    /** Precision in which |delta| is ranked for MAGNITUDE: -1 = the models' dtype, or a
     *  smelter_dtype. delta is computed in f32 and rounded to nearest even to this dtype. */
    int32_t key_dtype;
    /** n_models threshold keys from smelter_topk_select (global / chunked trimming), host
     *  memory; NULL = computed over this call's tensors (per-tensor trimming). */
    const uint32_t *thresholds;
    uint64_t seed;              /* RANDOM: user seed */
    uint64_t tensor_key;        /* RANDOM: smelter_tensor_key(name) of the tensor */
    int64_t element_offset;     /* RANDOM: index of element 0 of these views in the whole tensor */
    /** Optional out, host memory, 3 values: elected signs counted +, -, none (consensus only).
     *  Lets a caller resolve zero signs from the overall sign (TIES paper) in a second call. */
    int64_t *sign_counts;
    /* Fields below were appended within ABI version 1; smelter_merge_params_init sets their defaults. */
    /** MAGNITUDE_OUTLIERS: fraction of the largest |delta_i| dropped, n_models values in [0, 1],
     *  host memory; NULL = 0.01 each (mergekit's default). */
    const float *gammas;
    /** MAGNITUDE_OUTLIERS: n_models upper keys (keep key <= upper) from smelter_topk_select, for
     *  model-wide ranking together with thresholds; NULL = computed over this call's tensors. */
    const uint32_t *upper_thresholds;
    /** RANKED: n_models half-widths of the keep probabilities, host memory, with
     *  0 < density_i - epsilon_i and density_i + epsilon_i <= 1 (density_i = 1 keeps everything,
     *  whatever epsilon_i, as in mergekit); NULL = 0.15 each. */
    const float *epsilons;
    /** RANKED: elements per row ranked together (a matrix's last dimension); 0 = the whole view is
     *  one row (mergekit's rule for 1-D tensors). The element count must be a multiple of it. */
    int64_t row_length;
    /** Optional position selection (SCE): where the f32 key of |select[e]| is below
     *  select_threshold, no model's delta is kept at e. Same count as the models, any dtype. */
    const smelter_tensor *select;
    uint32_t select_threshold;
    /** Consensus with normalize: the divisor is max(sum of the agreeing weights, min_divisor), and
     *  1 when that is 0. Default 0: mergekit's TIES rule (a zero divisor becomes 1); SCE uses 1e-6. */
    float min_divisor;
    /** LINEAR only, optional: n_models per-element weight tensors (diagonal Fisher), same count as
     *  the models, any dtype: element e of model i weighs weights[i] * max(element_weights[i][e],
     *  element_weight_floors[i]); normalize divides by the sum of those weights at e. */
    const smelter_tensor *element_weights;
    const float *element_weight_floors; /* n_models, host memory; NULL = no floor (0) */
    /** Optional out, host memory, 1 value: output elements that are NaN or infinite once rounded to
     *  out's dtype (a NaN input, or a value beyond a 16-bit type's range), counted during the merge
     *  so that checking an output costs no pass of its own. */
    int64_t *nonfinite_count;
    /** n_models densities in double, host memory; when set they replace `densities`. Every count
     *  and probability is then taken from the double: k = floor(density * count) in double, as
     *  mergekit's int(density * numel) (0.7 of 1000 elements keeps 700; the float 0.7 keeps 699). */
    const double *densities_f64;
    /** MAGNITUDE_OUTLIERS: n_models gammas in double, replacing `gammas` when set (the dropped count
     *  is floor(gamma * count) in double; NULL here and in `gammas`: 0.01). */
    const double *gammas_f64;
} smelter_merge_params;

/** Fills defaults: TASK_ARITHMETIC, no sparsify/consensus, lambda 1, key_dtype -1, rest 0/NULL
 *  (gammas and epsilons NULL mean mergekit's defaults 0.01 and 0.15). */
SMELTER_API void smelter_merge_params_init(smelter_merge_params *params);

/** Merges into `out` (any dtype; f32 accumulation, round to nearest even). `out` may be NULL to
 *  compute only sign_counts. Positions where any input is NaN give NaN. Synchronous. */
SMELTER_API smelter_status smelter_merge(smelter_context *ctx, const smelter_merge_params *params,
                                         const smelter_tensor *out);

/** The 64-bit key of a tensor name for RANDOM sparsification (FNV-1a over the bytes). */
SMELTER_API uint64_t smelter_tensor_key(const char *name, size_t length);

/* ---- exact top-k thresholds over many tensors (global TIES trimming) ---------------------- */

/** Creates an exact streaming k-th-largest finder over keys of |model - base|, in `key_dtype`.
 *  Protocol: smelter_topk_add() every tensor of the model, then smelter_topk_select(k). For
 *  16-bit keys one pass suffices; for F32 select asks (more_passes = 1) for a second round of
 *  the same smelter_topk_add() calls, after which it returns the exact key. */
SMELTER_API smelter_status smelter_topk_create(smelter_context *ctx, smelter_dtype key_dtype,
                                               smelter_topk **out);
SMELTER_API smelter_status smelter_topk_destroy(smelter_topk *topk);
/** Adds the keys of |model - base| (base may be NULL: keys of |model|). */
SMELTER_API smelter_status smelter_topk_add(smelter_topk *topk, const smelter_tensor *base,
                                            const smelter_tensor *model);
/** Elements added so far in the current pass. */
SMELTER_API smelter_status smelter_topk_count(smelter_topk *topk, int64_t *count);
/** Finds the k-th largest key (k counted over all keys added in this pass). Sets *more_passes
 *  to 1 when another round of adds is needed, else 0 and *threshold to the key: elements with
 *  key >= threshold are the kept ones. k = 0 gives threshold 0xFFFFFFFF (keep nothing). */
SMELTER_API smelter_status smelter_topk_select(smelter_topk *topk, int64_t k, int32_t *more_passes,
                                               uint32_t *threshold);

/* ---- analysis: products and column statistics of activation matrices --------------------- */

/* Matrices are row-major views: a tensor of rows * cols elements (f32, f16 or bf16). Into an f32
 * `out`, elements are converted to f32, shifted and weighted in f32, and products accumulate in f32
 * (on CUDA with tensor cores, each f32 operand as two TF32 parts: as accurate as f32); callers chunk
 * the rows (a few thousand per call) and add the chunks up in f64. Into `out_f64` the same product is
 * formed in f64 throughout. Shifting by a provisional mean keeps the co-moments of activations with
 * large means accurate (see docs/ANALYSIS.md). Rows a zero row weight leaves out are not read. */

typedef enum smelter_product_kind {
    /** Co-moment over rows, x_cols x y_cols:  out[i][j] = sum_r w_r (x[r][i] - sx[i]) (y[r][j] - sy[j]).
     *  Needs x_rows == y_rows. Feature-space CKA, covariances. */
    SMELTER_PRODUCT_COLUMNS = 0,
    /** Gram matrix, x_rows x y_rows:  out[r][s] = sum_i (x[r][i] - sx[i]) (y[s][i] - sy[i]).
     *  Needs x_cols == y_cols; row_weights must be NULL. Gram-form and minibatch CKA. */
    SMELTER_PRODUCT_ROWS = 1
} smelter_product_kind;

typedef struct smelter_product_params {
    uint32_t struct_size;          /* sizeof(smelter_product_params) */
    int32_t kind;                  /* smelter_product_kind */
    const smelter_tensor *x;       /* x_rows * x_cols elements */
    const smelter_tensor *y;       /* y_rows * y_cols elements; may be the same view as x */
    int64_t x_rows, x_cols, y_rows, y_cols;
    const float *x_shift;          /* x_cols values, host memory; NULL = 0 */
    const float *y_shift;          /* y_cols values, host memory; NULL = 0 */
    const float *row_weights;      /* COLUMNS: x_rows values, host memory; NULL = all 1; a row with
                                      weight 0 is left out of x and y and not read */
    int32_t accumulate;            /* 1: out += product; 0: out = product */
    /** Optional f64 result in host memory instead of `out` (then NULL): the product's x_cols * y_cols
     *  (COLUMNS) or x_rows * y_rows (ROWS) values, row-major, added to under `accumulate`. The product
     *  is then formed in f64 throughout: each element converted to f64, shifted in f64 (exactly where
     *  the value and its shift are within a factor 2^29 of each other), weighted, multiplied and summed
     *  in f64, each output in one fixed order per backend (independent of the CPU thread count). An
     *  entry's error is then about its length times 2^-53 of its sum of |terms|, where f32 gives 2^-24.
     *  Appended within ABI version 1. */
    double *out_f64;
} smelter_product_params;

/** Fills defaults: COLUMNS, no shifts or weights, accumulate 0, rest 0/NULL. */
SMELTER_API void smelter_product_params_init(smelter_product_params *params);

/** Computes the product into `out`, an F32 tensor of (COLUMNS) x_cols * y_cols or (ROWS)
 *  x_rows * y_rows elements, row-major, host or device memory, or into params->out_f64 (then `out`
 *  is NULL). The result does not depend on the CPU thread count. Synchronous. */
SMELTER_API smelter_status smelter_product(smelter_context *ctx, const smelter_product_params *params,
                                           const smelter_tensor *out);

typedef struct smelter_column_stats_params {
    uint32_t struct_size;          /* sizeof(smelter_column_stats_params) */
    const smelter_tensor *x;       /* rows * cols elements */
    int64_t rows, cols;
    const float *shift;            /* cols values, host memory; NULL = 0 */
    const float *row_weights;      /* rows values, host memory; NULL = all 1; 0 leaves a row out */
    /** Optional out, host memory, cols values, added to: sum_r w_r (x[r][i] - shift[i]), each term and
     *  the sum in f64 (the shift exact, as in an f64 product), summed in an order that does not depend
     *  on the thread count. */
    double *sums;
    /** Optional out, host memory, cols values, added to: rows with w_r != 0 and x[r][i] > 0
     *  (neuron activation counts). */
    int64_t *positive;
} smelter_column_stats_params;

/** Fills defaults: no shift, no weights, no outputs. */
SMELTER_API void smelter_column_stats_params_init(smelter_column_stats_params *params);

/** Per-column sums and positive counts of a row-major matrix. Synchronous. */
SMELTER_API smelter_status smelter_column_stats(smelter_context *ctx, const smelter_column_stats_params *params);

/* ---- weight-space statistics of several tensors ------------------------------------------- */

/* Dot products, sign conflicts and mask overlaps of n tensors (or of their task vectors
 * d_i = v_i - base, computed in f32 as smelter_merge does), for weight-space comparison
 * (cosine, norms), TIES diagnostics and methods that need angles (model stock, SLERP).
 * Every output is an optional host array that the call adds to, so a caller can sum a layer's
 * tensors; n x n arrays are row-major and symmetric. */
typedef struct smelter_pair_stats_params {
    uint32_t struct_size;          /* sizeof(smelter_pair_stats_params) */
    int32_t n_vectors;             /* 1..SMELTER_MAX_MODELS */
    const smelter_tensor *vectors; /* n_vectors tensors, same count and dtype */
    const smelter_tensor *base;    /* NULL: statistics of the vectors; else of v_i - base (same count, dtype) */
    /** n*n f64: sum_e d_i[e] d_j[e]. The products are exact and the sum follows one fixed order
     *  (docs/ANALYSIS.md), so CPU and CUDA results are bit-identical and independent of threads. */
    double *dots;
    /** n*n: elements where d_i and d_j are both non-zero and of opposite sign (diagonal 0). */
    int64_t *sign_conflicts;
    /** n*n: elements where d_i and d_j are both non-zero (diagonal: non-zeros of d_i). */
    int64_t *both_nonzero;
    /** n*n: elements kept by both magnitude masks, key(|d_i|) >= thresholds[i] as in TIES
     *  trimming (diagonal: kept elements of d_i). Needs thresholds. */
    int64_t *both_kept;
    const uint32_t *thresholds;    /* n keys (smelter_topk_select), host memory */
    int32_t key_dtype;             /* precision of the keys: -1 = the vectors' dtype, or a smelter_dtype */
    /** n: elements where d_i is NaN or infinite. */
    int64_t *nonfinite;
    /* Appended within ABI version 1. */
    /** Optional position selection, as in smelter_merge_params: elements where the f32 key of
     *  |select[e]| is below select_threshold count as if every d_i were 0 there (dots, counts). */
    const smelter_tensor *select;
    uint32_t select_threshold;
    /** n*n f64: sum_e (d_i[e] - d_j[e])^2 (diagonal 0), summed in the order of `dots`. Each difference
     *  is taken in f64 from the two f32 values, exactly where they are within a factor 2^29 of each
     *  other (always for near-identical tensors), and its square rounds at most once (not at all for
     *  differences of up to 26 significant bits). The distance of tensors that differ slightly is then
     *  that of their differences, where |d_i|^2 + |d_j|^2 - 2 dots[i][j] cancels to rounding noise.
     *  Appended within ABI version 1. */
    double *squared_distances;
} smelter_pair_stats_params;

/** Fills defaults: no base, no outputs, key_dtype -1. */
SMELTER_API void smelter_pair_stats_params_init(smelter_pair_stats_params *params);

/** Computes the requested statistics. Synchronous. */
SMELTER_API smelter_status smelter_pair_stats(smelter_context *ctx, const smelter_pair_stats_params *params);

#ifdef __cplusplus
}
#endif

#endif /* SMELTER_H */
