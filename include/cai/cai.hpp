// cai/cai.hpp — umbrella for the standard-library-only part of cai (target cai::cai).
#pragma once
#include "algorithms.hpp"
#include "concepts.hpp"
#include "core.hpp"
