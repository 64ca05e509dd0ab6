// cai/core.hpp — umbrella: every core header.
#pragma once
#include "core/any_view.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/host.hpp"
#include "core/math.hpp"
#include "core/rng.hpp"
#include "core/simd.hpp"
#include "core/tensor.hpp"
#include "core/tensor_view.hpp"
#include "core/view_traits.hpp"
