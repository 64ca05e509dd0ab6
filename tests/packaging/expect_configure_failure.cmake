# Configures a consumer that must FAIL, and passes only if it failed for the expected reason.
#   cmake -DSOURCE=<dir> -DBINARY=<dir> -DGENERATOR=<name> -DEXPECT=<regex|regex...> [-DOPTIONS=<-D...|-D...>]
#         -P expect_configure_failure.cmake
# Lists are separated by '|' (a ';' would not survive the trip through add_test). EXPECT: regular expressions that
# must all match the configure output. The consumer prints "cai-pkg: UNEXPECTED"
# when something other than the expected failure goes wrong; that output fails the test as well.
cmake_minimum_required(VERSION 3.25)

foreach(_var SOURCE BINARY GENERATOR EXPECT)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "expect_configure_failure.cmake: pass -D${_var}=...")
  endif()
endforeach()

string(REPLACE "|" ";" OPTIONS "${OPTIONS}")
string(REPLACE "|" ";" EXPECT "${EXPECT}")

file(REMOVE_RECURSE "${BINARY}")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE}" -B "${BINARY}" -G "${GENERATOR}" ${OPTIONS}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
message("${_out}")

if(_rc EQUAL 0)
  message(FATAL_ERROR "configuring ${SOURCE} succeeded; it must fail")
endif()
if(_out MATCHES "cai-pkg: UNEXPECTED")
  message(FATAL_ERROR "configuring ${SOURCE} failed, but not (only) for the expected reason")
endif()
foreach(_regex IN LISTS EXPECT)
  if(NOT _out MATCHES "${_regex}")
    message(FATAL_ERROR "configuring ${SOURCE} failed as it should, but its output lacks /${_regex}/")
  endif()
endforeach()
message(STATUS "configuring ${SOURCE} failed as expected")
