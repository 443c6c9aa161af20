# vit.cu — build
#
#   make            ./vit_train, ./vit_predict and ./vit_export with nvcc (GPU programs)
#   make test       build and run the tests: the CUDA code under simt (g++, on the CPU, always)
#                   and the CUDA tests built by nvcc (run on a GPU when one is present)
#   make bench      ./vit_bench
#   make simt       build/simt/vit_train, vit_predict, vit_bench: the same programs with their CUDA
#                   path run on the CPU by simt (g++, no GPU needed; --device cuda works, slowly)
#   make resources  registers / spills / shared memory per kernel from ptxas
#   make deps       install the Debian/Ubuntu packages the build and tests need (run as root)
#   make data       download and verify CIFAR-10 into data/
#   make weights    export torchvision's ImageNet vit_b_16 to vit_b_16.safetensors (needs torch)
#
# Layout of the build (one rule per kind of source):
#   common/*.cpp cpu/*.cpp   plain C++ (config, weights, reference model)   g++  -> build/cpu/
#   host/*.cu tests/*.cu     CUDA source (kernels are included from here)   nvcc -> build/gpu/
#                                                                           g++ + simt -> build/simt/
#   simt/*.cpp tests/*.cpp   the CPU executor and CPU-only tests            g++  -> build/simt/

NVCC       ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME  ?= $(if $(NVCC),$(abspath $(dir $(NVCC))/..),/usr/local/cuda)
CXX        := g++
PYTHON     ?= python3

# NCCL (multi-GPU training) when its header is found: in the CUDA toolkit here, libnccl-dev
# elsewhere. Without it vit_train builds and runs one rank; simt always has its own NCCL.
NCCL_H     := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h))
NCCL_FLAGS := $(if $(NCCL_H),-DVIT_HAVE_NCCL,)
NCCL_LIBS  := $(if $(NCCL_H),-lnccl,)

OPT        ?= -O2
CXXFLAGS   := -std=c++17 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -fopenmp -I. -MMD -MP
# CUDA sources under simt are checked for misaligned accesses (a GPU faults on them, x86 does not):
# UBSan's alignment check, fatal, with simt naming the kernel (simt/scheduler.cpp).
SIMT_SAN   := -fsanitize=alignment -fno-sanitize-recover=alignment
# simt/include/ comes first so that <mma.h>, <cuda_pipeline.h> and <cuda_pipeline_primitives.h>
# are simt's device-side emulations (NVIDIA's compile to nothing outside nvcc).
SIMTFLAGS  := -DVIT_SIMT -Isimt/include -isystem $(CUDA_HOME)/include $(SIMT_SAN) -x c++
# Every program linked from simt objects needs these: the sanitizer runtime, and
# simt/discard_patchable.ld (without it, a template kernel with __launch_bounds__ instantiated in
# two objects fails to link: see that file).
SIMT_LDFLAGS := $(SIMT_SAN) -Wl,-T,simt/discard_patchable.ld
NVCCFLAGS  := -std=c++17 -O3 -lineinfo -I. -MMD -MP -Xcompiler -fopenmp,-Wall \
              --expt-relaxed-constexpr -diag-suppress 177 $(NCCL_FLAGS)
LIBS_CPU   := -lopenblas -lgomp -lpthread
LIBS_GPU   := -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart $(NCCL_LIBS) $(LIBS_CPU)
LIBS_SIMT  := -lboost_context -lgtest $(LIBS_CPU)

# --- GPU architectures -------------------------------------------------------------------
# ARCH=sm_90 overrides. Otherwise the local GPU's compute capability when nvidia-smi reports
# a well-formed one, else a fat binary for sm_80/86/89/90 plus PTX so newer GPUs JIT it.
GPU_CC := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
ifneq ($(ARCH),)
  ARCH_NUM := $(patsubst sm_%,%,$(ARCH))
  GENCODE  := -gencode arch=compute_$(ARCH_NUM),code=[sm_$(ARCH_NUM),compute_$(ARCH_NUM)]
else ifneq ($(shell echo '$(GPU_CC)' | grep -E '^[0-9]{2,3}$$'),)
  GENCODE  := -gencode arch=compute_$(GPU_CC),code=[sm_$(GPU_CC),compute_$(GPU_CC)]
else
  GENCODE  := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 \
              -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=[sm_90,compute_90]
endif
# The nvcc-built test binary only has to run where a GPU is: without one, PTX alone compiles
# fastest and still JITs on any GPU of compute capability >= 8.0.
ifneq ($(ARCH)$(shell echo '$(GPU_CC)' | grep -E '^[0-9]{2,3}$$'),)
  TEST_GENCODE := $(GENCODE)
else
  TEST_GENCODE := -gencode arch=compute_80,code=compute_80
endif

# --- sources ------------------------------------------------------------------------------
MAINS      := host/vit_train.cu host/vit_predict.cu host/vit_export.cu
PLAIN_SRC  := $(wildcard common/*.cpp cpu/*.cpp bench/*.cpp)
HOST_SRC   := $(filter-out $(MAINS),$(wildcard host/*.cu))
SIMT_SRC   := $(wildcard simt/*.cpp)
TEST_CU    := $(wildcard tests/*.cu)
TEST_CPP   := $(wildcard tests/*.cpp)
BENCH_SRC  := $(wildcard bench/*.cu)

PLAIN_OBJ  := $(PLAIN_SRC:%.cpp=build/cpu/%.o)
HOST_GPU   := $(HOST_SRC:%.cu=build/gpu/%.o)
HOST_SIMT  := $(HOST_SRC:%.cu=build/simt/%.o)
SIMT_OBJ   := $(SIMT_SRC:%.cpp=build/simt/%.o)

.PHONY: all test test-simt test-gpu bench simt resources deps data weights clean check-nvcc check-headers
all: vit_train vit_predict vit_export

# --- one-line diagnoses for a missing toolchain or package ------------------------------------
check-nvcc:
	@test -n "$(NVCC)" || { echo "error: nvcc not found: install the CUDA Toolkit >= 12 (package cuda-toolkit or nvidia-cuda-toolkit) or set NVCC=/path/to/nvcc" >&2; exit 1; }
HEADERS := nlohmann/json.hpp:nlohmann-json3-dev stb/stb_image.h:libstb-dev cblas.h:libopenblas-dev
TEST_HEADERS := gtest/gtest.h:libgtest-dev boost/context/fiber.hpp:libboost-context-dev
define check_headers
	@for hp in $(1); do h=$${hp%%:*}; p=$${hp##*:}; \
	  echo "#include <$$h>" | $(CXX) -std=c++17 -E -x c++ - >/dev/null 2>&1 || \
	  { echo "error: missing header <$$h>: install the Debian package $$p (or run: sudo make deps)" >&2; exit 1; }; done
endef
build/.headers-ok: | build
	$(call check_headers,$(HEADERS))
	@touch $@
build/.test-headers-ok: | build
	$(call check_headers,$(TEST_HEADERS))
	@touch $@
build:
	@mkdir -p build

# --- object rules -------------------------------------------------------------------------------
build/cpu/%.o: %.cpp | build/.headers-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@
build/gpu/%.o: %.cu | check-nvcc build/.headers-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(GENCODE) -c $< -o $@
build/gpu-test/%.o: %.cu | check-nvcc build/.headers-ok build/.test-headers-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(TEST_GENCODE) -c $< -o $@
build/simt/%.o: %.cu | build/.headers-ok build/.test-headers-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(SIMTFLAGS) -c $< -o $@
build/simt/%.o: %.cpp | build/.headers-ok build/.test-headers-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -isystem $(CUDA_HOME)/include -c $< -o $@

# --- programs -------------------------------------------------------------------------------------
vit_train: build/gpu/host/vit_train.o $(HOST_GPU) $(PLAIN_OBJ)
	$(NVCC) $(GENCODE) -o $@ $^ $(LIBS_GPU)
vit_predict: build/gpu/host/vit_predict.o $(HOST_GPU) $(PLAIN_OBJ)
	$(NVCC) $(GENCODE) -o $@ $^ $(LIBS_GPU)
# vit_export runs no CUDA code: common/ and cpu/ are all it needs.
vit_export: build/gpu/host/vit_export.o $(filter build/cpu/common/% build/cpu/cpu/%,$(PLAIN_OBJ))
	$(NVCC) $(GENCODE) -o $@ $^ $(LIBS_CPU)

# vit_bench links cuDNN when its header and library are found (its baselines), else goes without.
CUDNN_H    := $(firstword $(wildcard $(CUDA_HOME)/include/cudnn.h /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h))
BENCH_CUDNN := $(if $(CUDNN_H),-DVIT_HAVE_CUDNN,)
BENCH_LIBS  := $(if $(CUDNN_H),-lcudnn,)
build/gpu/bench/%.o: bench/%.cu | check-nvcc build/.headers-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(BENCH_CUDNN) $(GENCODE) -c $< -o $@
vit_bench: $(BENCH_SRC:%.cu=build/gpu/%.o) $(HOST_GPU) $(PLAIN_OBJ)
	$(NVCC) $(GENCODE) -o $@ $^ $(BENCH_LIBS) $(LIBS_GPU)
bench: vit_bench

# The programs built by g++ against simt: every kernel launch and CUDA/cuBLAS call runs on the
# CPU with simt's checks (bounds, guards, barriers, alignment). Same sources as the nvcc builds.
SIMT_PROGS := build/simt/vit_train build/simt/vit_predict build/simt/vit_bench
LIBS_SIMT_PROG := -lboost_context $(LIBS_CPU)
simt: $(SIMT_PROGS)
build/simt/vit_train: build/simt/host/vit_train.o $(HOST_SIMT) $(SIMT_OBJ) $(PLAIN_OBJ)
	$(CXX) $(CXXFLAGS) $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT_PROG)
build/simt/vit_predict: build/simt/host/vit_predict.o $(HOST_SIMT) $(SIMT_OBJ) $(PLAIN_OBJ)
	$(CXX) $(CXXFLAGS) $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT_PROG)
build/simt/vit_bench: $(BENCH_SRC:%.cu=build/simt/%.o) $(HOST_SIMT) $(SIMT_OBJ) $(PLAIN_OBJ)
	$(CXX) $(CXXFLAGS) $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT_PROG)

# Registers, spills, local memory, static shared memory and occupancy of every kernel, for sm_80
# and sm_90, from ptxas (this toolkit ships no cuobjdump). gpu_rows.cu calls every launcher, so
# compiling it instantiates every kernel.
resources: | check-nvcc build/.headers-ok
	@{ for a in 80 90; do $(NVCC) $(NVCCFLAGS) $(BENCH_CUDNN) -arch=sm_$$a --resource-usage \
	     -c bench/gpu_rows.cu -o /dev/null 2>&1 || exit 1; done; } | $(PYTHON) bench/resources.py

# --- tests ----------------------------------------------------------------------------------------
# build/test_simt: every test; CUDA code runs on the CPU through simt.
# build/test_gpu:  the CUDA tests (tests/*.cu) built by nvcc; each skips itself without a GPU.
# (build/simt/vit_train is order-only: tests/test_simt_programs.cpp runs the real binary.)
build/test_simt: $(TEST_CU:%.cu=build/simt/%.o) $(TEST_CPP:%.cpp=build/simt/%.o) $(HOST_SIMT) $(SIMT_OBJ) $(PLAIN_OBJ) | build/simt/vit_train
	$(CXX) $(CXXFLAGS) $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT)
build/test_gpu: $(TEST_CU:%.cu=build/gpu-test/%.o) $(HOST_SRC:%.cu=build/gpu-test/%.o) $(PLAIN_OBJ)
	$(NVCC) $(TEST_GENCODE) -o $@ $^ -lgtest $(LIBS_GPU)

test-simt: build/test_simt
	./build/test_simt
test-gpu: build/test_gpu
	./build/test_gpu
# Builds both binaries with a job per core (the build is most of the time), then runs both even
# when the first fails; the target fails if either did.
NPROC := $(shell nproc 2>/dev/null || echo 2)
test:
	@$(MAKE) --no-print-directory -j$(NPROC) build/test_simt build/test_gpu
	@st=0; ./build/test_gpu || st=1; ./build/test_simt || st=1; exit $$st

# --- the rest -------------------------------------------------------------------------------------
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  g++ make curl ca-certificates libgtest-dev libboost-context-dev libstb-dev \
	  nlohmann-json3-dev libopenblas-dev gnuplot-nox

data:
	bash data/get_cifar10.sh data

# torchvision's ImageNet ViT-B/16 (IMAGENET1K_V1) as safetensors, for --init ... --new-head.
# Uses the first of $(PYTHON), /usr/bin/python3 that can import torch and torchvision.
weights: vit_b_16.safetensors
vit_b_16.safetensors:
	@for py in $(PYTHON) /usr/bin/python3; do \
	  if $$py -c 'import torch, torchvision' >/dev/null 2>&1; then \
	    exec $$py tools/export_torchvision.py --model vit_b_16 --weights IMAGENET1K_V1 -o $@; fi; done; \
	echo "error: make weights needs torch and torchvision: apt install python3-torchvision (Debian/Ubuntu) or pip install torch torchvision" >&2; exit 1

clean:
	rm -rf build vit_train vit_predict vit_export vit_bench

-include $(shell find build -name '*.d' 2>/dev/null)
