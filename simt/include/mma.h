// simt/include/mma.h — `#include <mma.h>` in the simt build (simt/include/ comes before the CUDA
// include directory): simt's nvcuda::wmma instead of NVIDIA's, which is empty outside nvcc.
#pragma once
#include "simt/mma.h"
