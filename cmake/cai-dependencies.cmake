# Finds cai's optional dependencies quietly and sets CAI_HAVE_<DEP>. Used by the build and, installed beside
# cai-config.cmake, by consumers, so both see the same rules.
#
# No include_guard: variables and imported targets are scoped to a directory, so a consumer that calls
# find_package(cai COMPONENTS ...) in two sibling directories needs this file to run in each. A dependency whose
# target is already visible in the current scope is not searched again (LibTorch's config cannot be loaded twice
# in one directory).

if(TARGET nlohmann_json::nlohmann_json)
  set(CAI_HAVE_NLOHMANN_JSON ON)
else()
  find_package(nlohmann_json 3 QUIET)
  set(CAI_HAVE_NLOHMANN_JSON ${nlohmann_json_FOUND})
endif()

if(TARGET range-v3::range-v3)
  set(CAI_HAVE_RANGE_V3 ON)
else()
  find_package(range-v3 0.12.0 QUIET)
  set(CAI_HAVE_RANGE_V3 ${range-v3_FOUND})
endif()

# Debian ships cpp-httplib with a pkg-config file only.
set(CAI_HAVE_HTTPLIB OFF)
if(TARGET PkgConfig::CAI_HTTPLIB)
  set(CAI_HAVE_HTTPLIB ON)
else()
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(CAI_HTTPLIB QUIET IMPORTED_TARGET GLOBAL cpp-httplib)
    if(CAI_HTTPLIB_FOUND)
      set(CAI_HAVE_HTTPLIB ON)
    endif()
  endif()
endif()

# SentencePiece (Debian's libsentencepiece-dev) ships a pkg-config file. cai::sentencepiece links libsentencepiece and
# its trainer library for cai/sentencepiece/train.hpp; the tokenizer (cai/sentencepiece/tokenizer.hpp) is plain C++
# and needs no component. Do not link cai::sentencepiece into a program that loads LibTorch: Debian's
# libsentencepiece exports a bundled protobuf 3.14 that clashes with the libprotobuf 3.21 LibTorch loads (the process
# aborts at start-up); train tokenizers in a separate program (examples/spm_train.cpp).
set(CAI_HAVE_SENTENCEPIECE OFF)
if(DEFINED CAI_ENABLE_SENTENCEPIECE AND NOT CAI_ENABLE_SENTENCEPIECE)
  # disabled by the caller
elseif(TARGET PkgConfig::CAI_SENTENCEPIECE)
  set(CAI_HAVE_SENTENCEPIECE ON)
else()
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(CAI_SENTENCEPIECE QUIET IMPORTED_TARGET GLOBAL sentencepiece)
    if(CAI_SENTENCEPIECE_FOUND)
      find_library(CAI_SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train HINTS ${CAI_SENTENCEPIECE_LIBRARY_DIRS})
      if(CAI_SENTENCEPIECE_TRAIN_LIBRARY)
        set(CAI_HAVE_SENTENCEPIECE ON)
      endif()
    endif()
  endif()
endif()

set(CAI_HAVE_TORCH OFF)
if(NOT DEFINED CAI_ENABLE_TORCH OR CAI_ENABLE_TORCH)
  if(TARGET torch AND DEFINED TORCH_LIBRARIES)
    set(CAI_HAVE_TORCH ON)
  else()
    find_package(Torch QUIET)
    if(Torch_FOUND OR TORCH_FOUND)
      set(CAI_HAVE_TORCH ON)
    endif()
  endif()
endif()
