# detect.cmake: decides whether the CUDA backend (gpu/cuda) is built. Included from the top-level
# CMakeLists.txt (enable_language must run at top level). SEGQ_CUDA=AUTO builds it when nvcc,
# the CUDA toolkit and cuDNN are all found, ON fails without them, OFF skips it.
# Result: SEGQ_HAVE_CUDA (ON/OFF) and, when ON, the CUDA language plus CUDNN_LIBRARY/_INCLUDE_DIR.
set(SEGQ_HAVE_CUDA OFF)
set(sq_cuda_why "")
if(SEGQ_CUDA STREQUAL "OFF")
  set(sq_cuda_why "SEGQ_CUDA=OFF")
elseif(SEGQ_SANITIZE AND SEGQ_CUDA STREQUAL "AUTO")
  # ASan reserves the address ranges the CUDA runtime maps; sanitizer builds test the CPU path.
  set(sq_cuda_why "SEGQ_SANITIZE=ON (ASan and the CUDA runtime do not mix; SEGQ_CUDA=ON forces it)")
else()
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    # Hopper (H100/H200) and Ampere native code, plus compute_90 PTX for newer GPUs to JIT.
    set(CMAKE_CUDA_ARCHITECTURES 80-real 90-real 90-virtual)
  endif()
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(sq_cuda_why "no CUDA compiler (nvcc) found")
  else()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(NOT CUDAToolkit_FOUND)
      set(sq_cuda_why "CUDA toolkit libraries not found")
    else()
      find_path(CUDNN_INCLUDE_DIR cudnn.h
        HINTS ENV CUDNN_ROOT ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}
        PATH_SUFFIXES include)
      find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
        HINTS ENV CUDNN_ROOT ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}
        PATH_SUFFIXES lib lib64)
      if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
        set(sq_cuda_why "cuDNN not found (cudnn.h: ${CUDNN_INCLUDE_DIR}, libcudnn: ${CUDNN_LIBRARY})")
      else()
        set(SEGQ_HAVE_CUDA ON)
      endif()
    endif()
  endif()
endif()
if(SEGQ_HAVE_CUDA)
  message(STATUS "segq: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES}, cuDNN ${CUDNN_LIBRARY})")
elseif(SEGQ_CUDA STREQUAL "ON")
  message(FATAL_ERROR "segq: SEGQ_CUDA=ON but ${sq_cuda_why}")
else()
  message(STATUS "segq: CUDA backend OFF: ${sq_cuda_why}")
endif()
