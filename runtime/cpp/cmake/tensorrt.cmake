# TensorRT + CUDA runtime for the optional TensorRT backend (VLFRONT_WITH_TENSORRT=ON).
# TENSORRT_ROOT points at a TensorRT tar/SDK (include/, lib/); Debian/Ubuntu packages
# (libnvinfer-dev) are found on the default paths.
set(TENSORRT_ROOT "" CACHE PATH "TensorRT SDK root (include/NvInfer.h, lib/libnvinfer.so)")
find_package(CUDAToolkit REQUIRED)
find_path(TENSORRT_INCLUDE_DIR NvInfer.h HINTS ${TENSORRT_ROOT} PATH_SUFFIXES include)
find_library(TENSORRT_LIBRARY nvinfer HINTS ${TENSORRT_ROOT} PATH_SUFFIXES lib lib64)
if(NOT TENSORRT_INCLUDE_DIR OR NOT TENSORRT_LIBRARY)
  message(FATAL_ERROR "VLFRONT_WITH_TENSORRT=ON but TensorRT was not found; pass -DTENSORRT_ROOT=/path/to/TensorRT")
endif()
add_library(TensorRT::nvinfer SHARED IMPORTED GLOBAL)
set_target_properties(TensorRT::nvinfer PROPERTIES IMPORTED_LOCATION "${TENSORRT_LIBRARY}"
                      INTERFACE_INCLUDE_DIRECTORIES "${TENSORRT_INCLUDE_DIR}")
