# Finds nvcc and enables the CUDA language when it is there; otherwise the build is CPU-only.
#
#   SMELTER_CUDA            ON/OFF/AUTO (default AUTO): require, refuse or detect CUDA.
#   SMELTER_CUDA_ARCHS      CMAKE_CUDA_ARCHITECTURES value (default "90-real;90-virtual":
#                           sm_90 machine code plus compute_90 PTX that newer GPUs JIT-compile).

set(SMELTER_CUDA "AUTO" CACHE STRING "Build the CUDA backend: ON, OFF or AUTO")
set(SMELTER_CUDA_ARCHS "90-real;90-virtual" CACHE STRING "CUDA architectures to build for")

set(SMELTER_HAVE_CUDA OFF)
if(NOT SMELTER_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES ${SMELTER_CUDA_ARCHS})
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(SMELTER_HAVE_CUDA ON)
  elseif(SMELTER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SMELTER_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "Smelter CUDA backend: ${SMELTER_HAVE_CUDA} (architectures: ${SMELTER_CUDA_ARCHS})")
