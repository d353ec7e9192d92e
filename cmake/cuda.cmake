# CUDA backend (-DFI_CUDA=ON): the flexinfer_cuda library, the GPU tests (tests/gpu,
# label "gpu") and the GPU benchmark (bench/cuda). Kernels are built for sm_90 and
# sm_80 unless CMAKE_CUDA_ARCHITECTURES says otherwise.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90 80)
endif()
if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
# C programs that link the backend are linked by the C compiler (so sanitizer
# flags keep working); the C++ runtime is named explicitly below.
set(CMAKE_CUDA_LINKER_PREFERENCE_PROPAGATES 0)

file(GLOB FI_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.cu)
# The Hopper prefill kernel (wgmma) needs the architecture-specific sm_90a target,
# which CUDA_ARCHITECTURES cannot name in CMake 3.25: its sources build in their own
# object library with explicit -gencode, whatever CMAKE_CUDA_ARCHITECTURES says
# (dispatch.cu launches it only on compute capability 9.0).
file(GLOB FI_CUDA_SM90A_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/flash_fwd_wgmma*.cu)
list(REMOVE_ITEM FI_CUDA_SOURCES ${FI_CUDA_SM90A_SOURCES})
add_library(flexinfer_cuda_sm90a OBJECT ${FI_CUDA_SM90A_SOURCES})
set_property(TARGET flexinfer_cuda_sm90a PROPERTY COMPILE_OPTIONS "")
set_target_properties(flexinfer_cuda_sm90a PROPERTIES CUDA_ARCHITECTURES OFF POSITION_INDEPENDENT_CODE ON)
target_compile_options(flexinfer_cuda_sm90a PRIVATE
  -O3 --expt-relaxed-constexpr -Xcompiler=-Wall -Xptxas=-warn-spills -gencode=arch=compute_90a,code=sm_90a)
target_include_directories(flexinfer_cuda_sm90a PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
add_library(flexinfer_cuda STATIC ${FI_CUDA_SOURCES} $<TARGET_OBJECTS:flexinfer_cuda_sm90a>)
# The directory's C options (-Wall, -fsanitize, ...) are not nvcc options.
set_property(TARGET flexinfer_cuda PROPERTY COMPILE_OPTIONS "")
target_compile_options(flexinfer_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr -Xcompiler=-Wall -Xptxas=-warn-spills>)
target_include_directories(flexinfer_cuda PUBLIC ${CMAKE_SOURCE_DIR}/include PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(flexinfer_cuda PUBLIC flexinfer CUDA::cudart stdc++ m)
set_target_properties(flexinfer_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON)

add_executable(fi_cuda_bench ${CMAKE_SOURCE_DIR}/bench/cuda/fi_cuda_bench.c)
target_include_directories(fi_cuda_bench PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(fi_cuda_bench PRIVATE flexinfer_cuda)

# Run-time compiled mask/score expressions (src/cuda/nvrtc_*): the kernel headers
# are embedded as strings at build time and compiled by NVRTC, loaded through the
# driver API. Only this library links NVRTC.
set(FI_NVRTC_HEADERS src/cuda/kernel_params.h src/cuda/device_common.cuh
    src/cuda/flash_fwd_kernel.cuh src/cuda/nvrtc_kernels.cuh)
set(FI_NVRTC_EMBEDDED ${CMAKE_BINARY_DIR}/generated/nvrtc_embedded.c)
list(TRANSFORM FI_NVRTC_HEADERS PREPEND ${CMAKE_SOURCE_DIR}/ OUTPUT_VARIABLE FI_NVRTC_HEADER_PATHS)
add_custom_command(OUTPUT ${FI_NVRTC_EMBEDDED}
  COMMAND ${CMAKE_COMMAND} -DROOT=${CMAKE_SOURCE_DIR} "-DINPUTS=${FI_NVRTC_HEADERS}"
          -DOUTPUT=${FI_NVRTC_EMBEDDED} -P ${CMAKE_SOURCE_DIR}/cmake/embed_sources.cmake
  DEPENDS ${FI_NVRTC_HEADER_PATHS} ${CMAKE_SOURCE_DIR}/cmake/embed_sources.cmake
  COMMENT "Embedding the kernel headers for NVRTC" VERBATIM)
target_sources(flexinfer_cuda PRIVATE ${FI_NVRTC_EMBEDDED})
set_source_files_properties(${FI_NVRTC_EMBEDDED} PROPERTIES COMPILE_OPTIONS "-Wno-overlength-strings")
list(GET CUDAToolkit_INCLUDE_DIRS 0 FI_CUDA_INCLUDE_DIR)
target_compile_definitions(flexinfer_cuda PRIVATE "FI_CUDA_INCLUDE_DIR=\"${FI_CUDA_INCLUDE_DIR}\"")
# The driver API is reached through cudaGetDriverEntryPointByVersion: no libcuda link,
# so CUDA builds still start (and run their CPU paths) on machines without a driver.
target_link_libraries(flexinfer_cuda PUBLIC CUDA::nvrtc)
