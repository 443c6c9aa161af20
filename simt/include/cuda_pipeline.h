// simt/include/cuda_pipeline.h — in the simt build: the pipeline primitives of simt/pipeline.h.
// (NVIDIA's header also declares nvcuda::experimental::pipeline, which simt does not provide:
// use the primitives.)
#pragma once
#include "simt/pipeline.h"
