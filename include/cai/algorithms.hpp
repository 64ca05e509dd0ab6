// cai/algorithms.hpp — umbrella: every algorithm family.
#pragma once
#include "algorithms/dispatch.hpp"
#include "algorithms/logprobs.hpp"
#include "algorithms/sequences.hpp"
#include "algorithms/stats.hpp"
#include "algorithms/kl.hpp"
#include "algorithms/kl_controller.hpp"
#include "algorithms/rewards.hpp"
#include "algorithms/gae.hpp"
#include "algorithms/advantages.hpp"
#include "algorithms/aggregation.hpp"
#include "algorithms/ppo.hpp"
#include "algorithms/objective.hpp"
