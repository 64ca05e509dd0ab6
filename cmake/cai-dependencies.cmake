# Finds cai's optional dependencies quietly and sets CAI_HAVE_<DEP>. Used by the build and, installed beside
# cai-config.cmake, by consumers, so both see the same rules.
include_guard(GLOBAL)

find_package(nlohmann_json 3 QUIET)
set(CAI_HAVE_NLOHMANN_JSON ${nlohmann_json_FOUND})

find_package(range-v3 0.12.0 QUIET)
set(CAI_HAVE_RANGE_V3 ${range-v3_FOUND})

# Debian ships cpp-httplib with a pkg-config file only.
set(CAI_HAVE_HTTPLIB OFF)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(CAI_HTTPLIB QUIET IMPORTED_TARGET GLOBAL cpp-httplib)
  if(CAI_HTTPLIB_FOUND)
    set(CAI_HAVE_HTTPLIB ON)
  endif()
endif()

set(CAI_HAVE_TORCH OFF)
if(NOT DEFINED CAI_ENABLE_TORCH OR CAI_ENABLE_TORCH)
  find_package(Torch QUIET)
  if(Torch_FOUND OR TORCH_FOUND)
    set(CAI_HAVE_TORCH ON)
  endif()
endif()
