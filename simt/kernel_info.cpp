// simt/kernel_info.cpp — what simt knows about a kernel from its address alone: its
// __launch_bounds__, its static __shared__ bytes, its name, and (for cudaLaunchKernel) how to
// launch it from a `void** args` array.
//
// g++ keeps no per-function attributes a program could query, so the facts are read back from
// the executable itself:
//
//   * __launch_bounds__(N, ...) expands (simt/simt.h) to patchable_function_entry(2(N+2), N+2):
//     N + 2 one-byte NOPs (0x90) before the kernel's entry point and N + 2 after it (executed: a
//     few cycles per CUDA thread). The bound is the shorter of the two NOP runs, minus 2. Any
//     function may be preceded by alignment padding that ends in one 0x90 byte, and a few bodies
//     (GCC's .cold clones) start with one: without the 2 extra NOPs such a function would read as
//     bounded to 1 thread. A wrong reading would need two stray NOP bytes on both sides. (The
//     linker section __patchable_function_entries would name the NOPs exactly, but GCC 12 emits
//     it unusable for COMDAT functions, so the simt link discards it.)
//   * __shared__ is `static thread_local`, so each static shared variable of a kernel is a TLS
//     symbol in the executable's symbol table (.symtab), named like any C++ local static:
//     `_ZZ` + the kernel's mangled name without `_Z` + `E` + the variable's name. Its st_size is
//     the variable's size. Internal-linkage kernels (our `static __global__`) exist once per
//     translation unit under the same mangled name; their local symbols follow the STT_FILE
//     symbol of their object file, so a kernel's statics are looked up within its own file group
//     (global symbols, e.g. statics of template instantiations, form one group of their own).
//     Limits: __shared__ variables declared in a __device__ function the kernel calls are not
//     counted (they belong to that function's symbol), alignment padding between variables is
//     not counted, and a stripped executable reports 0 bytes.
//
// The symbol table is read once per module from its file (/proc/self/exe for the executable).
#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "simt/internal.h"

namespace simt {
namespace {

using Lock = std::lock_guard<std::recursive_mutex>;

// ---------------------------------------------------------------------------------------------
// Symbols of one loaded module.
struct FuncSym {
  std::string name;  // mangled
  int group;         // STT_FILE group of a local symbol, -1 for global ones
};
struct TlsSym {
  std::string name;
  size_t size;
  int group;
};
struct Module {
  uintptr_t lo = 0, hi = 0;   // address range of its loaded segments
  uintptr_t bias = 0;         // load bias: address = bias + st_value
  bool loaded = false;
  std::string path;           // its file, read on first use
  std::multimap<uintptr_t, FuncSym> funcs;  // by address
  std::vector<TlsSym> tls;
};
std::vector<Module> g_modules;
bool g_modules_scanned = false;

void load_symbols(Module& m, const char* path) {
  m.loaded = true;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(Elf64_Ehdr)) {
    close(fd);
    return;
  }
  const size_t size = (size_t)st.st_size;
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return;
  const unsigned char* base = static_cast<const unsigned char*>(map);
  const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shoff == 0 || eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > size) {
    munmap(map, size);
    return;
  }
  const Elf64_Shdr* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  const Elf64_Shdr* symtab = nullptr;
  for (int i = 0; i < eh->e_shnum; ++i)
    if (sh[i].sh_type == SHT_SYMTAB) symtab = &sh[i];
  if (!symtab)  // stripped: the dynamic symbols at least name exported kernels
    for (int i = 0; i < eh->e_shnum; ++i)
      if (sh[i].sh_type == SHT_DYNSYM) symtab = &sh[i];
  if (symtab && symtab->sh_link < eh->e_shnum && symtab->sh_offset + symtab->sh_size <= size) {
    const Elf64_Shdr& strsec = sh[symtab->sh_link];
    const char* strs = reinterpret_cast<const char*>(base + strsec.sh_offset);
    const Elf64_Sym* syms = reinterpret_cast<const Elf64_Sym*>(base + symtab->sh_offset);
    const size_t n = symtab->sh_size / sizeof(Elf64_Sym);
    int group = -1;
    for (size_t i = 0; i < n; ++i) {
      const Elf64_Sym& s = syms[i];
      if (s.st_name >= strsec.sh_size) continue;
      const int type = ELF64_ST_TYPE(s.st_info), bind = ELF64_ST_BIND(s.st_info);
      if (type == STT_FILE) {
        ++group;
        continue;
      }
      const int g = bind == STB_LOCAL ? std::max(group, 0) : -1;
      if (type == STT_FUNC && s.st_value)
        m.funcs.emplace(m.bias + s.st_value, FuncSym{strs + s.st_name, g});
      else if (type == STT_TLS)
        m.tls.push_back(TlsSym{strs + s.st_name, (size_t)s.st_size, g});
    }
  }
  munmap(map, size);
}

// The module whose loaded segments contain `addr` (symbols read on first use), or null.
Module* module_of(const void* addr) {
  if (!g_modules_scanned) {
    g_modules_scanned = true;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void*) -> int {
          Module m;
          m.bias = info->dlpi_addr;
          m.lo = ~uintptr_t(0);
          for (int i = 0; i < info->dlpi_phnum; ++i)
            if (info->dlpi_phdr[i].p_type == PT_LOAD) {
              uintptr_t a = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
              m.lo = std::min(m.lo, a);
              m.hi = std::max(m.hi, a + info->dlpi_phdr[i].p_memsz);
            }
          // The executable comes first, with an empty name.
          m.path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
          g_modules.push_back(std::move(m));
          return 0;
        },
        nullptr);
  }
  const uintptr_t a = (uintptr_t)addr;
  for (Module& m : g_modules)
    if (a >= m.lo && a < m.hi) {
      if (!m.loaded) load_symbols(m, m.path.c_str());
      return &m;
    }
  return nullptr;
}

// The function symbol at exactly `func`, preferring a C++ (mangled) name.
const FuncSym* func_symbol(const void* func) {
  Module* m = module_of(func);
  if (!m) return nullptr;
  auto range = m->funcs.equal_range((uintptr_t)func);
  const FuncSym* best = nullptr;
  for (auto it = range.first; it != range.second; ++it)
    if (!best || (it->second.name.rfind("_Z", 0) == 0 && best->name.rfind("_Z", 0) != 0))
      best = &it->second;
  return best;
}

// ---------------------------------------------------------------------------------------------
struct KernelInfo {
  bool have_bound = false, have_smem = false;
  int bound = 0;
  size_t smem = 0;
  std::string name;  // set by LAUNCH's registration or from the symbol table
  detail::PackedLauncher launcher = nullptr;
};
std::unordered_map<const void*, KernelInfo> g_kernels;

int find_launch_bound(const void* func) {
  const unsigned char* f = static_cast<const unsigned char*>(func);
  const unsigned char* body = f;
  static const unsigned char endbr64[4] = {0xf3, 0x0f, 0x1e, 0xfa};  // -fcf-protection's landing pad
  if (memcmp(body, endbr64, 4) == 0) body += 4;
  constexpr int kMax = 4096;
  int after = 0, before = 0;
  while (after < kMax && body[after] == 0x90) ++after;
  if (after <= detail::kBoundNops) return 0;
  while (before < kMax && f[-1 - before] == 0x90) ++before;
  const int n = std::min(after, before) - detail::kBoundNops;
  return n > 0 ? n : 0;
}

size_t find_static_smem(const void* func) {
  const FuncSym* fs = func_symbol(func);
  Module* m = module_of(func);
  if (!fs || !m) return 0;
  // Local statics of `_Z<encoding>` are `_ZZ<encoding>E<name>`; of an extern "C" function f,
  // `_ZZ<len>fE<name>`.
  const std::string prefix = fs->name.rfind("_Z", 0) == 0
                                 ? "_ZZ" + fs->name.substr(2) + "E"
                                 : "_ZZ" + std::to_string(fs->name.size()) + fs->name + "E";
  size_t total = 0;
  for (const TlsSym& t : m->tls)
    if (t.group == fs->group && t.name.compare(0, prefix.size(), prefix) == 0) total += t.size;
  return total;
}

KernelInfo& info(const void* func) { return g_kernels[func]; }

}  // namespace

namespace detail {

int launch_bound(const void* func) {
  Lock lock(device_mutex());
  KernelInfo& k = info(func);
  if (!k.have_bound) {
    k.bound = find_launch_bound(func);
    k.have_bound = true;
  }
  return k.bound;
}

size_t static_smem_bytes(const void* func) {
  Lock lock(device_mutex());
  KernelInfo& k = info(func);
  if (!k.have_smem) {
    k.smem = find_static_smem(func);
    k.have_smem = true;
  }
  return k.smem;
}

void register_kernel(const void* func, const char* name, PackedLauncher launcher) {
  Lock lock(device_mutex());
  KernelInfo& k = info(func);
  if (!k.launcher) k.launcher = launcher;
  if (k.name.empty() && name) k.name = name;
}

bool launch_registered(const void* func, dim3 grid, dim3 block, void** args, size_t smem,
                       cudaStream_t stream) {
  PackedLauncher launcher;
  const char* name;
  {
    Lock lock(device_mutex());
    auto it = g_kernels.find(func);
    if (it == g_kernels.end() || !it->second.launcher) return false;
    launcher = it->second.launcher;
  }
  name = kernel_name(func);
  launcher(func, name, grid, block, args, smem, stream);
  return true;
}

const char* kernel_name(const void* func) {
  Lock lock(device_mutex());
  KernelInfo& k = info(func);
  if (k.name.empty()) {
    if (const FuncSym* fs = func_symbol(func)) {
      int status = 0;
      char* d = abi::__cxa_demangle(fs->name.c_str(), nullptr, nullptr, &status);
      k.name = status == 0 && d ? d : fs->name;
      free(d);
    } else {
      char buf[32];
      snprintf(buf, sizeof buf, "kernel at %p", func);
      k.name = buf;
    }
  }
  return k.name.c_str();  // node-based map: stable for the life of the program
}

cudaError_t launch_returning_error(const std::function<void()>& do_launch) {
  const cudaError_t before = cudaGetLastError();  // (reads and clears)
  do_launch();
  const cudaError_t e = cudaGetLastError();
  set_last_error(e != cudaSuccess ? e : before);
  return e;
}

}  // namespace detail
}  // namespace simt

// The C entry point: the kernel must be known from an earlier LAUNCH or typed cudaLaunchKernel.
extern "C" cudaError_t cudaLaunchKernel(const void* func, dim3 gridDim, dim3 blockDim, void** args,
                                        size_t sharedMem, cudaStream_t stream) {
  if (!func) {
    simt::detail::set_last_error(cudaErrorInvalidDeviceFunction);
    return cudaErrorInvalidDeviceFunction;
  }
  cudaError_t result = cudaSuccess;
  bool known = true;
  result = simt::detail::launch_returning_error([&] {
    known = simt::detail::launch_registered(func, gridDim, blockDim, args, sharedMem, stream);
  });
  if (!known)
    simt::fail("cudaLaunchKernel(%p): simt does not know this kernel's parameter types. Call "
               "cudaLaunchKernel with the kernel itself (not a const void*), or launch it once "
               "through LAUNCH first (%s)",
               func, simt::detail::kernel_name(func));
  return result;
}
