# Fixture of the find_package tests: installs cai's build tree into a fresh prefix and checks what was installed.
#   cmake -DBUILD_DIR=<cai build tree> -DPREFIX=<prefix> -DSOURCE_DIR=<cai source tree> -DCMAKE_DIR=<lib/cmake/cai>
#         -DCOMPONENTS=<io;views;...> [-DCONFIG=<config>] [-DCLEAN_DIRS=<dirs>] [-DFORBIDDEN=<paths>]
#         -P install.cmake
# CLEAN_DIRS (the consumers' build trees) are removed with the old prefix, so that no consumer reuses a cache made
# against a previous installation. FORBIDDEN: absolute paths that no installed CMake file may contain (the source
# and build trees, the configured install prefix), so the installation is relocatable and self-contained.
cmake_minimum_required(VERSION 3.25)

foreach(_var BUILD_DIR PREFIX SOURCE_DIR CMAKE_DIR)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "install.cmake: pass -D${_var}=...")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}" ${CLEAN_DIRS})
set(_config_args "")
if(CONFIG)
  set(_config_args --config "${CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${_config_args}
                RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed: ${_rc}")
endif()

set(_errors "")

# Every header of the source tree is installed.
file(GLOB_RECURSE _source_headers RELATIVE "${SOURCE_DIR}/include" "${SOURCE_DIR}/include/*")
file(GLOB_RECURSE _installed_headers RELATIVE "${PREFIX}/include" "${PREFIX}/include/*")
foreach(_header IN LISTS _source_headers)
  if(NOT _header IN_LIST _installed_headers)
    list(APPEND _errors "header not installed: include/${_header}")
  endif()
endforeach()

# The package files, one targets file per component the build found.
set(_package_files cai-config.cmake cai-config-version.cmake cai-dependencies.cmake cai-targets.cmake)
foreach(_component IN LISTS COMPONENTS)
  list(APPEND _package_files cai-${_component}-targets.cmake)
endforeach()
foreach(_file IN LISTS _package_files)
  if(NOT EXISTS "${PREFIX}/${CMAKE_DIR}/${_file}")
    list(APPEND _errors "package file not installed: ${CMAKE_DIR}/${_file}")
  endif()
endforeach()

# No installed CMake file points back into the source or build tree or at the configured prefix.
file(GLOB_RECURSE _cmake_files "${PREFIX}/*.cmake")
foreach(_file IN LISTS _cmake_files)
  file(READ "${_file}" _text)
  foreach(_path IN LISTS FORBIDDEN)
    string(FIND "${_text}" "${_path}" _at)
    if(NOT _at EQUAL -1)
      list(APPEND _errors "${_file} contains the absolute path ${_path}")
    endif()
  endforeach()
endforeach()

if(_errors)
  list(JOIN _errors "\n  " _errors)
  message(FATAL_ERROR "the installation in ${PREFIX} is incomplete or not relocatable:\n  ${_errors}")
endif()
list(LENGTH _installed_headers _n_headers)
message(STATUS "installed cai into ${PREFIX}: ${_n_headers} headers, package files ${_package_files}")
