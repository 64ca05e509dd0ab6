// cai/concepts.hpp — umbrella: every concept.
#pragma once
#include "concepts/backend.hpp"
#include "concepts/judge.hpp"
#include "concepts/policy.hpp"
#include "concepts/scalar_model.hpp"
#include "concepts/text_generator.hpp"
#include "concepts/tokenizer.hpp"
#include "concepts/types.hpp"
