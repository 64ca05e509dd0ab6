// cai/algorithms.hpp — umbrella: every algorithm family.
#pragma once
#include "algorithms/dispatch.hpp"
#include "algorithms/logprobs.hpp"
