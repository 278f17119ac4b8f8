// Stand-in for the CUDA backend in builds without nvcc: it reports that CUDA is absent.
#include "../core/backend.h"

namespace smelter {

std::unique_ptr<Backend> make_cuda_backend(int) {
    fail(SMELTER_ERR_UNSUPPORTED, "this libsmelter was built without CUDA (nvcc was not found at build time)");
}
int cuda_device_count() { return 0; }
std::string cuda_device_name(int) {
    fail(SMELTER_ERR_UNSUPPORTED, "this libsmelter was built without CUDA (nvcc was not found at build time)");
}
const char *cuda_build_info() { return "no cuda"; }

}  // namespace smelter
