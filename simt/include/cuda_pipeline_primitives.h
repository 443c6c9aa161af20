// simt/include/cuda_pipeline_primitives.h — in the simt build, CUDA's pipeline primitives
// (__pipeline_memcpy_async, __pipeline_commit, __pipeline_wait_prior) from simt/pipeline.h.
#pragma once
#include "simt/pipeline.h"
