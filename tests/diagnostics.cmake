# Compiles a probe that must NOT compile and checks that the compiler's output contains the expected diagnostic.
#   cmake -DCXX=<compiler> -DINCLUDE=<include dir> -DSOURCE=<probe.cpp> -DEXPECT=<text> -P diagnostics.cmake
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -I${INCLUDE} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must fail with: ${EXPECT}")
endif()
string(FIND "${out}${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${SOURCE} failed without the expected diagnostic '${EXPECT}'. Output:\n${out}${err}")
endif()
message(STATUS "diagnostic found: ${EXPECT}")
