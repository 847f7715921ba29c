# Resolves ONNX Runtime into the imported target onnxruntime::onnxruntime.
#
# The onnxruntime wheel names its library libonnxruntime.so.<version> while its
# SONAME is libonnxruntime.so.1, so we give the linker and the loader a private
# directory with both names pointing at the chosen file, and put that
# directory on the build RPATH.
if(ONNXRUNTIME_ROOT)
  find_path(_ort_inc onnxruntime_cxx_api.h
    PATHS "${ONNXRUNTIME_ROOT}/include" "${ONNXRUNTIME_ROOT}/include/onnxruntime" NO_DEFAULT_PATH)
  file(GLOB _ort_libs "${ONNXRUNTIME_ROOT}/lib/libonnxruntime.so*" "${ONNXRUNTIME_ROOT}/lib64/libonnxruntime.so*")
  list(SORT _ort_libs)
  list(GET _ort_libs 0 _ort_lib)
  set(ONNXRUNTIME_INCLUDE_DIR "${_ort_inc}" CACHE PATH "" FORCE)
  set(ONNXRUNTIME_LIBRARY "${_ort_lib}" CACHE FILEPATH "" FORCE)
endif()

if(NOT EXISTS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR
    "ONNX Runtime headers not found (ONNXRUNTIME_INCLUDE_DIR='${ONNXRUNTIME_INCLUDE_DIR}'). "
    "Run `make cpp` (fetches Debian 13's libonnxruntime-dev headers into build/cpp-deps/ort), "
    "or pass -DONNXRUNTIME_ROOT=/path/to/onnxruntime-sdk.")
endif()
if(NOT EXISTS "${ONNXRUNTIME_LIBRARY}")
  message(FATAL_ERROR
    "ONNX Runtime library not found (ONNXRUNTIME_LIBRARY='${ONNXRUNTIME_LIBRARY}'). "
    "Point it at the wheel's onnxruntime/capi/libonnxruntime.so.* or pass -DONNXRUNTIME_ROOT.")
endif()

file(READ "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_header LIMIT 4096)
string(REGEX MATCH "#define ORT_API_VERSION ([0-9]+)" _m "${_ort_header}")
set(ONNXRUNTIME_API_VERSION "${CMAKE_MATCH_1}")
message(STATUS "ONNX Runtime: headers ${ONNXRUNTIME_INCLUDE_DIR} (ORT_API_VERSION ${ONNXRUNTIME_API_VERSION}), "
               "library ${ONNXRUNTIME_LIBRARY}")

set(_ort_dir "${CMAKE_BINARY_DIR}/onnxruntime-lib")
file(MAKE_DIRECTORY "${_ort_dir}")
get_filename_component(_ort_real "${ONNXRUNTIME_LIBRARY}" REALPATH)
foreach(_name libonnxruntime.so libonnxruntime.so.1)
  file(CREATE_LINK "${_ort_real}" "${_ort_dir}/${_name}" SYMBOLIC)
endforeach()

add_library(onnxruntime::onnxruntime SHARED IMPORTED GLOBAL)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${_ort_dir}/libonnxruntime.so.1"
  IMPORTED_SONAME "libonnxruntime.so.1"
  INTERFACE_INCLUDE_DIRECTORIES "${ONNXRUNTIME_INCLUDE_DIR}")
set(CMAKE_BUILD_RPATH "${_ort_dir}")
