# vit.cu — build
#
#   make            ./vit_train, ./vit_predict and ./vit_export with nvcc (GPU programs)
#   make test       build and run the tests: the CUDA code under simt (g++, on the CPU, always)
#                   and the CUDA tests built by nvcc (run on a GPU when one is present)
#   make test-sanitize  the same simt/CPU tests under AddressSanitizer + UBSan (build/asan/)
#   make test-race  the kernel tests with simt in race mode under ThreadSanitizer (build/race/)
#   make bench      ./vit_bench
#   make simt       build/simt/vit_train, vit_predict, vit_bench: the same programs with their CUDA
#                   path run on the CPU by simt (g++, no GPU needed; --device cuda works, slowly)
#   make resources  registers / spills / shared memory per kernel from ptxas
#   make gpu-check  the GPU acceptance run (tools/gpu_check.sh); make gpu-tools fetches what it needs
#   make fuzz       fuzz the file and command-line readers (clang/libFuzzer; FUZZ_SECONDS=N each)
#   make deps       install the Debian/Ubuntu packages the build and tests need (run as root;
#                   libgcc-12-dev carries the ASan/UBSan/TSan runtimes of the sanitizer modes)
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

.PHONY: all test test-simt test-gpu test-sanitize test-race bench simt resources deps data weights clean check-nvcc check-headers check-fuzz-cxx
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
# build/test_gpu needs GoogleTest but not Boost.Context (only simt uses it): a GPU machine
# that builds just the nvcc tests (make gpu-check) need not have Boost.
build/.gtest-headers-ok: | build
	$(call check_headers,gtest/gtest.h:libgtest-dev)
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
build/gpu-test/%.o: %.cu | check-nvcc build/.headers-ok build/.gtest-headers-ok
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
# and sm_90, from ptxas; gpu_rows.cu calls every launcher, so compiling it instantiates every
# kernel. Where a cuobjdump is found (the toolkit's, or the PyPI wheel nvidia-cuda-cuobjdump
# with the nvdisasm it runs, installed by `pip install --target .tools nvidia-cuda-cuobjdump
# nvidia-cuda-nvdisasm`), the cubins' SASS is read back too and each kernel's tensor-core
# instructions (HMMA / HGMMA) are counted.
CUOBJDUMP  ?= $(firstword $(shell command -v cuobjdump 2>/dev/null) $(wildcard $(CUDA_HOME)/bin/cuobjdump .tools/nvidia/*/bin/cuobjdump))
RES_DIR    := build/resources
resources: | check-nvcc build/.headers-ok
	@mkdir -p $(RES_DIR)
	@for a in 80 90; do $(NVCC) $(filter-out -MMD -MP,$(NVCCFLAGS)) $(BENCH_CUDNN) -arch=sm_$$a \
	   --resource-usage -cubin bench/gpu_rows.cu -o $(RES_DIR)/gpu_rows_sm_$$a.cubin 2>&1 || exit 1; \
	 done > $(RES_DIR)/ptxas.txt || { cat $(RES_DIR)/ptxas.txt; exit 1; }
	@$(if $(CUOBJDUMP),for a in 80 90; do PATH="$$PATH:$(abspath $(dir $(CUOBJDUMP)))" $(CUOBJDUMP) -sass $(RES_DIR)/gpu_rows_sm_$$a.cubin \
	   > $(RES_DIR)/sass_sm_$$a.txt || exit 1; done,echo "(no cuobjdump: tensor-core instruction counts left out)")
	@$(PYTHON) bench/resources.py $(if $(CUOBJDUMP),--sass sm_80=$(RES_DIR)/sass_sm_80.txt \
	   --sass sm_90=$(RES_DIR)/sass_sm_90.txt) < $(RES_DIR)/ptxas.txt

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

# --- sanitizer builds (each in its own build directory; `make test` is untouched) ---------------------
# One set of object rules per mode: $(1) the directory, $(2) the flags added to every compile.
# MODE_EXTRA: per-object additions (target-specific), placed after the mode's flags.
define MODE_RULES
$(1)/cpu/%.o: %.cpp | build/.headers-ok
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(CXXFLAGS) $(2) $$(MODE_EXTRA) -c $$< -o $$@
$(1)/simt/%.o: %.cu | build/.headers-ok build/.test-headers-ok
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(CXXFLAGS) $(2) $$(SIMTFLAGS) $$(MODE_EXTRA) -c $$< -o $$@
$(1)/simt/%.o: %.cpp | build/.headers-ok build/.test-headers-ok
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(CXXFLAGS) $(2) -isystem $$(CUDA_HOME)/include $$(MODE_EXTRA) -c $$< -o $$@
endef

# make test-sanitize: every test of build/test_simt (the CPU-only tests and the CUDA code under
# simt) built with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan/. simt announces
# its fiber switches to ASan. Any UBSan finding is fatal. SANITIZE_FILTER narrows the run.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
$(eval $(call MODE_RULES,build/asan,$(ASAN_FLAGS)))
# stb_image's shifts and sums that UBSan flags are memory-safe (docs/reliability.md), as for fuzz/.
build/asan/cpu/common/image.o: MODE_EXTRA := -fno-sanitize=shift,signed-integer-overflow
# stb_image_write's JPEG encoder left-shifts negative values (stbiw__jpg_writeBits): defined by
# every compiler we use, flagged by UBSan; the files that compile its implementation are exempt
# from that one check.
STB_WRITE_OBJ := build/asan/cpu/common/attention_map.o \
  $(patsubst %,build/asan/simt/tests/%.o,test_hostile test_finetune test_predict test_image_folder test_train_cuda)
$(STB_WRITE_OBJ): MODE_EXTRA := -fno-sanitize=shift-base
ASAN_OBJ := $(TEST_CU:%.cu=build/asan/simt/%.o) $(TEST_CPP:%.cpp=build/asan/simt/%.o) \
            $(HOST_SRC:%.cu=build/asan/simt/%.o) $(SIMT_SRC:%.cpp=build/asan/simt/%.o) \
            $(PLAIN_SRC:%.cpp=build/asan/cpu/%.o)
build/asan/test_simt: $(ASAN_OBJ) | build/simt/vit_train
	$(CXX) $(CXXFLAGS) $(ASAN_FLAGS) $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT)
SANITIZE_FILTER ?= *
test-sanitize:
	@$(MAKE) --no-print-directory -j$(NPROC) build/asan/test_simt
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ./build/asan/test_simt --gtest_filter='$(SANITIZE_FILTER)'

# make test-race: the kernel tests and simt's own tests built with ThreadSanitizer into
# build/race/, simt in race mode (-DSIMT_RACE): every CUDA thread a TSan fiber, barriers, warp
# ops and kernel boundaries annotated as the CUDA memory model's happens-before edges, atomics
# real atomics, blocks of a grid unordered. The scheduler itself is not instrumented (its
# bookkeeping is shared by all fibers by design); the WMMA and async-copy emulations hide theirs
# from TSan at run time and announce their accesses to user memory (simt/internal.h: RaceIgnore).
# One OpenMP/OpenBLAS thread: libgomp is not built with TSan, so its barriers would look like
# races in the CPU reference.
RACE_FLAGS := -fsanitize=thread -DSIMT_RACE
$(eval $(call MODE_RULES,build/race,$(RACE_FLAGS)))
build/race/simt/simt/scheduler.o: simt/scheduler.cpp | build/.headers-ok build/.test-headers-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -DSIMT_RACE -isystem $(CUDA_HOME)/include -c $< -o $@
RACE_TESTS := main test_simt test_simt_wmma test_adam test_attention test_attention_tc test_dropout \
              test_gelu test_input test_layernorm test_loss test_matmul test_matmul_lt test_patch_embed \
              test_wmma_gemm test_gemm_ln test_head test_reduce
RACE_OBJ   := $(RACE_TESTS:%=build/race/simt/tests/%.o) build/race/simt/host/cuda_common.o \
              $(SIMT_SRC:%.cpp=build/race/simt/%.o) \
              $(patsubst %.cpp,build/race/cpu/%.o,$(filter-out bench/%,$(PLAIN_SRC)))
build/race/test_race: $(RACE_OBJ)
	$(CXX) $(CXXFLAGS) -fsanitize=thread $(SIMT_LDFLAGS) -o $@ $^ $(LIBS_SIMT)
# The attention tests at the basic, vit-b16 and T257 shapes take minutes each under TSan (every
# CUDA thread is a TSan fiber); the same kernels run here at T17 (hd16, hd32, with dropout). The
# tensor-core attention runs at every shape of its suite (T197 and T260 take ~5 s each here).
# The fused GEMM + LayerNorm tests at the basic and vit-b16 widths take 1-2 minutes each (they
# ran clean once when the kernels landed); the odd-shape, mask, stride and determinism tests run
# the same kernel paths (one and two column passes, 32- and 16-row blocks, the aliased mask).
RACE_FILTER ?= -Shapes/AttentionTest.*/basic_*:Shapes/AttentionTest.*/vitb16_*:Shapes/AttentionTest.*/T257_*:Shapes/AttentionTest.*/peaked_*:GemmLnForward.BasicShape:GemmLnForward.VitB16Width:GemmLnBackward.BasicShape:GemmLnBackward.VitB16Width
test-race:
	@$(MAKE) --no-print-directory -j$(NPROC) build/race/test_race
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:exitcode=66:history_size=0 \
	  ./build/race/test_race --gtest_filter='$(RACE_FILTER)'

# --- fuzzing (docs/reliability.md) ------------------------------------------------------------
# libFuzzer targets in fuzz/, one per reader, built with clang: the readers (common/, cpu/) with
# coverage + ASan + UBSan into one archive, each target linked against it. `make fuzz` builds
# them, writes the seed corpus (fuzz/make_seeds + tests/fixtures) and runs each target for
# FUZZ_SECONDS (tools/run_fuzz.sh); a finding fails the target and is left in build/fuzz/artifacts/.
FUZZ_CXX      ?= clang++
FUZZ_SECONDS  ?= 60
FUZZ_TARGETS  := safetensors weights cifar image cli
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CXXFLAGS := -std=c++17 -O1 -g -I. -fopenmp -MMD -MP -Wall -Wno-unused-parameter $(FUZZ_SAN)
FUZZ_LIB_OBJ  := $(filter-out build/fuzz/obj/bench/%,$(PLAIN_SRC:%.cpp=build/fuzz/obj/%.o))
.PHONY: fuzz fuzz-build
.SECONDARY: $(FUZZ_TARGETS:%=build/fuzz/obj/fuzz/fuzz_%.o)
build/fuzz/obj/%.o: %.cpp | build/.headers-ok check-fuzz-cxx
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
# stb_image 2.27 (compiled inside common/image.cpp) shifts by >= 32 bits and shifts negative
# values in its JPEG bit reader and IDCT when a scan runs out of data, and lets a JPEG's DC
# prediction overflow int: memory-safe (a shift count is masked and the Huffman decoder's length
# checks then end the decode; the overflowed sums are coefficients, stored as shorts, never
# indices; upstream 2.28 turns both into errors), so UBSan's shift and signed-overflow checks
# are off for that one object (docs/reliability.md); bounds and every other check stay on, and
# ASan sees every access.
# Any sanitizer build of common/image.cpp needs the same (make test-sanitize too): its tests
# decode tests/fixtures/hostile/ files that reach those spots.
STB_UBSAN_EXCEPTIONS := -fno-sanitize=shift,signed-integer-overflow
build/fuzz/obj/common/image.o: FUZZ_CXXFLAGS += $(STB_UBSAN_EXCEPTIONS)
build/fuzz/libvit.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
build/fuzz/fuzz_%: build/fuzz/obj/fuzz/fuzz_%.o build/fuzz/libvit.a
	$(FUZZ_CXX) $(FUZZ_SAN) -fsanitize=fuzzer -fopenmp -o $@ $^ -lopenblas
# stb_image_write's JPEG encoder shifts negative values (UB, harmless on every compiler here):
# the seed writer is a tool, not under test, so its own object goes without UBSan.
build/fuzz/obj/fuzz/make_seeds.o: fuzz/make_seeds.cpp | build/.headers-ok check-fuzz-cxx
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fno-sanitize=undefined -c $< -o $@
build/fuzz/make_seeds: build/fuzz/obj/fuzz/make_seeds.o build/fuzz/libvit.a
	$(FUZZ_CXX) $(FUZZ_SAN) -fopenmp -o $@ $^ -lopenblas
check-fuzz-cxx:
	@command -v $(FUZZ_CXX) >/dev/null || { echo "error: $(FUZZ_CXX) not found: make fuzz needs clang with libFuzzer (Debian packages clang libclang-rt-14-dev, or run: sudo make deps)" >&2; exit 1; }
fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/fuzz_%) build/fuzz/make_seeds
fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) bash tools/run_fuzz.sh $(FUZZ_TARGETS)

# --- the GPU acceptance run (tools/gpu_check.sh, docs/reliability.md) ---------------------------
# make gpu-check [GPU_CHECK_OUT=DIR]: on a machine with a GPU, build for it, run every CUDA test,
# compute-sanitizer, the stream-race stress test, vit_bench and a short vit_train on synthetic
# data (cuda vs cpu); results into DIR (default $$OUT, else build/gpu-check). Without a GPU it
# stops at once with one line and exit status 3.
build/toy_cifar: build/cpu/tools/toy_cifar.o build/cpu/common/cifar.o
	$(CXX) $(CXXFLAGS) -o $@ $^
build/cpu/tools/%.o: tools/%.cpp | build/.headers-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@
.PHONY: gpu-check gpu-tools
gpu-check:
	@bash tools/gpu_check.sh $(GPU_CHECK_OUT)
# What gpu-check needs that a GPU machine without network may lack, fetched here into the
# ignored tools/.gpu-tools/: the Debian packages of the build (headers and libraries, unpacked
# there by gpu_check.sh when the machine has none) and the nvidia-cuda-sanitizer-api wheel.
GPU_TOOL_DEBS := libgtest-dev libgmock-dev nlohmann-json3-dev libstb-dev libstb0 libopenblas-dev \
                 libopenblas0 libopenblas0-pthread libopenblas-pthread-dev libgfortran5
gpu-tools:
	@mkdir -p tools/.gpu-tools/debs tools/.gpu-tools/wheels
	cd tools/.gpu-tools/debs && apt-get download $(GPU_TOOL_DEBS)
	-$(PYTHON) -m pip download --no-deps --only-binary=:all: -d tools/.gpu-tools/wheels nvidia-cuda-sanitizer-api-cu12

# --- the rest -------------------------------------------------------------------------------------
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  g++ libgcc-12-dev make curl ca-certificates libgtest-dev libboost-context-dev libstb-dev \
	  nlohmann-json3-dev libopenblas-dev gnuplot-nox clang libclang-rt-14-dev libomp-14-dev

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
