// simt/mma.cpp — the warp-collective WMMA operations behind simt/mma.h.
//
// Built only on simt's public device intrinsics: a fragment is the calling lane's elements, as
// on a GPU, and a collective operation is "deposit what this lane brings in the warp's staging
// record, __syncwarp(full mask), check that every lane brought the same arguments, then do this
// lane's share". Loads and stores touch only the calling lane's elements (on a GPU, too, each
// thread loads and stores its own registers' worth after the warp has converged); mma_sync reads
// the whole tiles from the staging records, so every lane computes its own D elements.
//
// Staging is double-buffered by a per-lane sequence number: operation n uses buffer n % 2, and no
// lane can reach operation n + 2 (reusing that buffer) before every lane has arrived at n + 1,
// i.e. finished reading buffer n % 2. So one __syncwarp per operation suffices. The last lane to
// deposit (fibers are cooperative: the arrivals are counted one at a time) checks everyone's
// arguments and, for mma_sync, computes the D tile once for the warp; after the __syncwarp each
// lane takes its own elements.
//
// Race mode (ThreadSanitizer): the staging records, sequence numbers and mapping tables are
// simt's bookkeeping, shared by every warp of every block (blocks reuse g_stage one after
// another; the first lane to need a mapping table builds it for all), so every access to them
// is inside a RaceIgnore scope (simt/internal.h): TSan, which rightly sees no order between
// blocks or between warps, would otherwise report them. What a lane reads from or writes to the
// user's memory (a load's matrix, a store's matrix, its own fragment) stays outside those scopes
// and is checked: a store racing with another warp's access to the same tile is reported. The
// order among the 32 lanes comes from the __syncwarp each operation makes (annotated by the
// scheduler), as a warp-collective operation synchronises its lanes on a GPU.
#include "simt/mma.h"

#include <map>
#include <string>
#include <vector>

#include "common/philox.h"
#include "simt/internal.h"

namespace simt {

namespace {

using wmma_detail::Elem;
using wmma_detail::FragDesc;
using wmma_detail::Use;
using detail::RaceIgnore;
using detail::race_user_read;
using detail::race_user_write;

// ---------------------------------------------------------------------------------------------
// Mapping choice.
struct MapState {
  bool initialised = false;
  WmmaMap map = WmmaMap::Scrambled;
  uint64_t seed = 0;
  uint64_t generation = 1;  // bumped by every change: cached tables are rebuilt
};
MapState g_map;

void init_map_from_env() {
  if (g_map.initialised) return;
  g_map.initialised = true;
  const char* env = getenv("SIMT_WMMA_MAP");
  if (!env || !*env) return;
  std::string s(env), name = s.substr(0, s.find(':'));
  uint64_t seed = 0;
  if (s.find(':') != std::string::npos) seed = strtoull(s.c_str() + s.find(':') + 1, nullptr, 0);
  if (name == "natural" && s.find(':') == std::string::npos) g_map.map = WmmaMap::Natural;
  else if (name == "scrambled") g_map.map = WmmaMap::Scrambled;
  else fail("SIMT_WMMA_MAP=%s: expected natural or scrambled[:SEED]", env);
  g_map.seed = seed;
}

// ---------------------------------------------------------------------------------------------
// Mapping tables: slot s = lane * ne + i of a fragment type holds tile element fwd[s]
// (= row * cols + col). Each element is held by r = 32 * ne / (rows * cols) slots, listed in
// inv[e * r .. e * r + r).
struct Table {
  uint64_t generation = 0;
  int copies = 1;
  std::vector<uint16_t> fwd, inv;
};
std::map<uint64_t, Table> g_tables;

uint64_t desc_key(const FragDesc& d) {
  return (uint64_t)d.use | (uint64_t)d.elem << 8 | (uint64_t)(uint8_t)d.layout << 16 |
         (uint64_t)d.m << 24 | (uint64_t)d.n << 32 | (uint64_t)d.k << 40 | (uint64_t)d.ne << 48;
}

const Table& table(const FragDesc& d) {
  init_map_from_env();
  const uint64_t key = desc_key(d);
  Table& t = g_tables[key];
  if (t.generation == g_map.generation) return t;
  const unsigned slots = 32u * d.ne, elems = (unsigned)d.rows * d.cols;
  t.copies = (int)(slots / elems);
  t.fwd.resize(slots);
  std::vector<unsigned> perm(slots);
  for (unsigned s = 0; s < slots; ++s) perm[s] = s;
  if (g_map.map == WmmaMap::Scrambled) {
    // Fisher-Yates with Philox, keyed by the seed and the fragment type (site "WMMA"), so each
    // type has its own mapping and the same one at every call.
    uint64_t draw = 0;
    for (unsigned i = slots; i > 1; --i) {
      uint32_t r = vit::philox_u32(g_map.seed, 0x574D4D41u, key, draw++);
      std::swap(perm[i - 1], perm[(unsigned)(((uint64_t)r * i) >> 32)]);
    }
  }
  for (unsigned s = 0; s < slots; ++s) t.fwd[s] = (uint16_t)(perm[s] % elems);
  t.inv.assign(slots, 0);
  std::vector<int> filled(elems, 0);
  for (unsigned s = 0; s < slots; ++s) {
    const unsigned e = t.fwd[s];
    t.inv[e * t.copies + filled[e]++] = (uint16_t)s;
  }
  t.generation = g_map.generation;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Names for messages.
const char* elem_name(Elem e) {
  switch (e) {
    case Elem::Half: return "__half";
    case Elem::Bf16: return "__nv_bfloat16";
    case Elem::Tf32: return "precision::tf32";
    case Elem::Float: return "float";
  }
  return "?";
}
std::string frag_name(const FragDesc& d) {
  char buf[128];
  const char* use = d.use == Use::A ? "matrix_a" : d.use == Use::B ? "matrix_b" : "accumulator";
  if (d.use == Use::Acc)
    snprintf(buf, sizeof buf, "fragment<%s, %d, %d, %d, %s>", use, d.m, d.n, d.k, elem_name(d.elem));
  else
    snprintf(buf, sizeof buf, "fragment<%s, %d, %d, %d, %s, %s>", use, d.m, d.n, d.k,
             elem_name(d.elem), d.layout == 0 ? "row_major" : "col_major");
  return buf;
}
size_t elem_bytes(Elem e) { return e == Elem::Half || e == Elem::Bf16 ? 2 : 4; }

// The value of element i of a lane's fragment as the tensor core reads it.
float to_float(const FragDesc& d, const void* x, int i) {
  switch (d.elem) {
    case Elem::Half: return __half2float(static_cast<const __half*>(x)[i]);
    case Elem::Bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]);
    case Elem::Tf32: {
      // A tensor core reads the sign, exponent and top 10 mantissa bits of a tf32 operand; the
      // rest is ignored (truncated) unless __float_to_tf32 rounded it away first.
      uint32_t u;
      std::memcpy(&u, static_cast<const float*>(x) + i, 4);
      u &= 0xffffe000u;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    case Elem::Float: return static_cast<const float*>(x)[i];
  }
  return 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Per-warp staging (warp index within the block; blocks run one at a time on the launching
// thread, and the block index recorded in every deposit proves it).
enum class Op : uint8_t { Load, Store, Mma };
const char* op_name(Op op) {
  return op == Op::Load ? "wmma::load_matrix_sync" : op == Op::Store ? "wmma::store_matrix_sync"
                                                                     : "wmma::mma_sync";
}

struct LaneRec {
  Op op;
  const FragDesc* d[4];  // load/store: d[0]; mma: D, A, B, C
  const void* ptr;
  unsigned ldm;
  int layout;
  const char* file;
  int line;
  uint3 block;
  float a[16], b[16], c[8];  // mma: this lane's A, B, C elements as the tensor core reads them
};
struct WarpStage {
  uint32_t seq[32];      // per lane: WMMA operations started
  LaneRec rec[2][32];    // per buffer, per lane: what the lane brought
  uint32_t arrived[2];   // per buffer: lanes that have deposited for the current operation
  uint32_t done[2];      // per buffer: the operation number the last arriver completed
  float d[2][256];       // per buffer: mma_sync's D tile (m x n row-major), computed once
};
WarpStage g_stage[32];  // 1024 threads per block at most: 32 warps

struct Lane {
  unsigned lane, warp;
  WarpStage* st;
  unsigned buf;     // this operation's buffer
  uint32_t number;  // this operation's number (the same in every lane)
  LaneRec* rec;     // this lane's record in this operation's buffer
  LaneRec* recs;    // the 32 records of this operation's buffer
};

std::string where_warp(unsigned warp) {
  return detail::current_kernel_where() + " warp " + std::to_string(warp);
}

const char* layout_name(const LaneRec& r) {
  if (r.op == Op::Mma) return "";
  if (r.d[0]->use != Use::Acc) return r.layout == 0 ? "row_major" : "col_major";
  return r.layout == 0 ? "mem_row_major" : "mem_col_major";
}

// Validates what the calling lane passes and deposits it in this operation's staging buffer.
// Then: arrive() (the last lane checks that all 32 agree), __syncwarp, completed().
Lane enter(Op op, const FragDesc* const* d, int nd, const void* ptr, unsigned ldm, int layout,
           const char* file, int line) {
  const unsigned linear = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  Lane L;
  L.lane = linear % 32;
  L.warp = linear / 32;
  if (L.warp >= 32) fail("%s at %s:%d called outside a kernel", op_name(op), file, line);
  if (op != Op::Mma) {
    const FragDesc& f = *d[0];
    const size_t eb = elem_bytes(f.elem);
    if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0)
      fail("%s at %s:%d in %s: pointer %p is not 256-bit (32-byte) aligned, as CUDA requires",
           op_name(op), file, line, where_warp(L.warp).c_str(), ptr);
    if ((ldm * eb) % 16 != 0)
      fail("%s at %s:%d in %s: ldm %u is not a multiple of %zu elements (16 bytes of %s), as CUDA "
           "requires",
           op_name(op), file, line, where_warp(L.warp).c_str(), ldm, 16 / eb, elem_name(f.elem));
    if (layout != 0 && layout != 1)
      fail("%s at %s:%d in %s: layout %d is neither mem_row_major nor mem_col_major", op_name(op),
           file, line, where_warp(L.warp).c_str(), layout);
  }
  WarpStage& st = g_stage[L.warp];
  L.st = &st;
  L.number = ++st.seq[L.lane];
  const unsigned buf = L.number & 1u;
  L.buf = buf;
  L.recs = st.rec[buf];
  L.rec = &L.recs[L.lane];
  LaneRec& r = *L.rec;
  r.op = op;
  for (int i = 0; i < 4; ++i) r.d[i] = i < nd ? d[i] : nullptr;
  r.ptr = ptr;
  r.ldm = ldm;
  r.layout = layout;
  r.file = file;
  r.line = line;
  r.block = blockIdx;
  return L;
}

// Lane `lane`'s record against lane 0's.
void agree(const Lane& L, unsigned lane) {
  const LaneRec& r = L.recs[lane];
  const LaneRec& r0 = L.recs[0];
  if (r0.block.x != r.block.x || r0.block.y != r.block.y || r0.block.z != r.block.z)
    fail("%s at %s:%d in %s: internal error: two blocks use one warp's WMMA staging at once",
         op_name(r.op), r.file, r.line, where_warp(L.warp).c_str());
  if (r.op != r0.op)
    fail("%s at %s:%d in %s: lane %u calls %s while lane 0 calls %s at %s:%d. All 32 lanes of the "
         "warp must call the same WMMA operation",
         op_name(r.op), r.file, r.line, where_warp(L.warp).c_str(), lane, op_name(r.op),
         op_name(r0.op), r0.file, r0.line);
  for (int i = 0; i < 4; ++i)
    if (r.d[i] != r0.d[i] && (!r.d[i] || !r0.d[i] || desc_key(*r.d[i]) != desc_key(*r0.d[i])))
      fail("%s at %s:%d in %s: lane %u passes a %s while lane 0 passes a %s at %s:%d. All 32 lanes "
           "of the warp must pass the same arguments",
           op_name(r.op), r.file, r.line, where_warp(L.warp).c_str(), lane,
           frag_name(*r.d[i]).c_str(), frag_name(*r0.d[i]).c_str(), r0.file, r0.line);
  if (r.op != Op::Mma && (r.ptr != r0.ptr || r.ldm != r0.ldm || r.layout != r0.layout))
    fail("%s at %s:%d in %s: lane %u passes (pointer %p, ldm %u, %s) while lane 0 passes (pointer "
         "%p, ldm %u, %s) at %s:%d. All 32 lanes of the warp must pass the same arguments",
         op_name(r.op), r.file, r.line, where_warp(L.warp).c_str(), lane, r.ptr, r.ldm,
         layout_name(r), r0.ptr, r0.ldm, layout_name(r0), r0.file, r0.line);
}

// The lane has deposited: the last of the 32 to do so checks that they all brought the same
// (so a mismatch aborts before anything is computed from it) and returns true.
bool arrive(const Lane& L) {
  WarpStage& st = *L.st;
  if (++st.arrived[L.buf] < 32) return false;
  st.arrived[L.buf] = 0;
  for (unsigned l = 1; l < 32; ++l) agree(L, l);
  st.done[L.buf] = L.number;
  return true;
}
// After the __syncwarp: the operation is complete only if all 32 lanes arrived at it (not some
// at a plain __syncwarp, which the warp-op check alone would accept).
void completed(const Lane& L) {
  // (Exited lanes, and lanes past a partial last warp, do not take part in a __syncwarp on sm_70+,
  // so a warp with fewer than 32 live lanes also ends up here.)
  if (L.st->done[L.buf] != L.number)
    fail("%s at %s:%d in %s: lane %u met other lanes of its warp at a __syncwarp that is not this "
         "WMMA operation: only %u of the warp's 32 lanes called it (the others exited, do not "
         "exist in a partial last warp, or wait elsewhere). All 32 lanes of the warp must call it",
         op_name(L.rec->op), L.rec->file, L.rec->line, where_warp(L.warp).c_str(), L.lane,
         L.st->arrived[L.buf]);
}

// Offset in elements of tile element e in memory of the given layout.
inline size_t offset_of(const FragDesc& d, unsigned e, unsigned ldm, int layout) {
  const unsigned row = e / d.cols, col = e % d.cols;
  return layout == 0 ? (size_t)row * ldm + col : (size_t)col * ldm + row;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void set_wmma_map(WmmaMap map, uint64_t seed) {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  init_map_from_env();
  g_map.map = map;
  g_map.seed = seed;
  ++g_map.generation;
}
WmmaMap wmma_map() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  init_map_from_env();
  return g_map.map;
}
uint64_t wmma_map_seed() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  init_map_from_env();
  return g_map.seed;
}
void reset_wmma_map() {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  const uint64_t gen = g_map.generation;
  g_map = MapState();
  g_map.generation = gen + 1;
  init_map_from_env();
}

namespace wmma_detail {

void element_position(const FragDesc& d, int lane, int i, int* row, int* col) {
  std::lock_guard<std::recursive_mutex> lock(detail::device_mutex());
  const unsigned e = table(d).fwd[(unsigned)lane * d.ne + (unsigned)i];
  *row = (int)(e / d.cols);
  *col = (int)(e % d.cols);
}

namespace {
constexpr unsigned kMaxNe = 16;  // the most elements a lane holds (half A/B fragments)

// The collective part of a load or store (bookkeeping only, hidden from TSan in race mode):
// deposit, meet the warp, check, then the byte offsets in the user's matrix of the calling
// lane's elements.
void load_store_offsets(Op op, const FragDesc& d, const void* p, unsigned ldm, int mem_layout,
                        const char* file, int line, size_t* off) {
  const FragDesc* ds[1] = {&d};
  Lane L;
  {
    RaceIgnore ignore;
    L = enter(op, ds, 1, p, ldm, mem_layout, file, line);
    arrive(L);
  }
  __syncwarp(0xffffffffu, file, line);
  RaceIgnore ignore;
  completed(L);
  const Table& t = table(d);
  const size_t eb = elem_bytes(d.elem);
  for (unsigned i = 0; i < d.ne; ++i) off[i] = offset_of(d, t.fwd[L.lane * d.ne + i], ldm, mem_layout) * eb;
}
}  // namespace

// The element copies between the user's matrix and the fragment are outside any RaceIgnore
// scope and announced to TSan in race mode (the small memcpys are expanded inline, unseen).
void load(const FragDesc& d, void* x, const void* p, unsigned ldm, int mem_layout, const char* file,
          int line) {
  static_assert(sizeof(LaneRec::a) / sizeof(float) == kMaxNe, "kMaxNe: the largest fragment");
  size_t off[kMaxNe];
  load_store_offsets(Op::Load, d, p, ldm, mem_layout, file, line, off);
  const size_t eb = elem_bytes(d.elem);
  const unsigned char* src = static_cast<const unsigned char*>(p);
  unsigned char* dst = static_cast<unsigned char*>(x);
  race_user_write(dst, d.ne * eb);
  for (unsigned i = 0; i < d.ne; ++i) {
    race_user_read(src + off[i], eb);
    std::memcpy(dst + i * eb, src + off[i], eb);
  }
}

void store(const FragDesc& d, const void* x, void* p, unsigned ldm, int mem_layout,
           const char* file, int line) {
  size_t off[kMaxNe];
  load_store_offsets(Op::Store, d, p, ldm, mem_layout, file, line, off);
  const size_t eb = elem_bytes(d.elem);
  const unsigned char* src = static_cast<const unsigned char*>(x);
  unsigned char* dst = static_cast<unsigned char*>(p);
  race_user_read(src, d.ne * eb);
  for (unsigned i = 0; i < d.ne; ++i) {
    race_user_write(dst + off[i], eb);
    std::memcpy(dst + off[i], src + i * eb, eb);
  }
}

namespace {
// The whole tile of fragment d (rows x cols floats, row-major) from the staged records. check:
// verify that all copies of each element agree.
void gather(const LaneRec* recs, const FragDesc& d, int which, float* tile, bool check, const char* what, const LaneRec& me, unsigned warp) {
  const Table& t = table(d);
  const unsigned elems = (unsigned)d.rows * d.cols;
  auto value = [&](unsigned slot) -> const float& {
    const LaneRec& r = recs[slot / d.ne];
    const float* f = which == 0 ? r.a : which == 1 ? r.b : r.c;
    return f[slot % d.ne];
  };
  for (unsigned e = 0; e < elems; ++e) {
    const unsigned s0 = t.inv[e * t.copies];
    tile[e] = value(s0);
    if (!check) continue;
    for (int j = 1; j < t.copies; ++j) {
      const unsigned s = t.inv[e * t.copies + j];
      if (std::memcmp(&value(s), &value(s0), 4) != 0)
        fail("wmma::mma_sync at %s:%d in %s: operand %s (%s) holds tile element (%u, %u) twice, as x[%u] of "
             "lane %u (%g) and as x[%u] of lane %u (%g), and the copies differ: x[i] was written "
             "in a way that depends on the element-to-lane mapping, which CUDA leaves unspecified",
             me.file, me.line, where_warp(warp).c_str(), what, frag_name(d).c_str(),
             e / d.cols, e % d.cols, s0 % d.ne, s0 / d.ne, value(s0), s % d.ne, s / d.ne, value(s));
    }
  }
}
}  // namespace

namespace {
// mma_sync's collective part (bookkeeping, hidden from TSan in race mode): deposit the lane's
// operand elements; the last lane to arrive computes the warp's D tile once.
Lane mma_deposit(const FragDesc* const* ds, const float* a, const float* b, const float* c,
                 const char* file, int line) {
  RaceIgnore ignore;
  const FragDesc &dd = *ds[0], &da = *ds[1], &db = *ds[2], &dc = *ds[3];
  Lane L = enter(Op::Mma, ds, 4, nullptr, 0, 0, file, line);
  LaneRec& r = *L.rec;
  std::memcpy(r.a, a, da.ne * sizeof(float));
  std::memcpy(r.b, b, db.ne * sizeof(float));
  std::memcpy(r.c, c, dc.ne * sizeof(float));
  if (!arrive(L)) return L;
  const unsigned N = dd.n, K = dd.k, elems = (unsigned)dd.m * dd.n;
  float A[32 * 16], B[16 * 32], C[16 * 16];  // m x k, k x n, m x n, row-major
  gather(L.recs, da, 0, A, true, "a", r, L.warp);
  gather(L.recs, db, 1, B, true, "b", r, L.warp);
  gather(L.recs, dc, 2, C, true, "c", r, L.warp);
  float* D = L.st->d[L.buf];
  for (unsigned e = 0; e < elems; ++e) {
    const unsigned row = e / N, col = e % N;
    // FP32 accumulation from C in k order; products of half/bf16/tf32 values are exact in FP32.
    float acc = C[e];
    for (unsigned k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    D[e] = acc;
  }
  return L;
}
}  // namespace

// The lane's fragments are read, and its D elements written, outside the RaceIgnore scopes.
void mma(const FragDesc& dd, void* dx, const FragDesc& da, const void* ax, const FragDesc& db,
         const void* bx, const FragDesc& dc, const void* cx, const char* file, int line) {
  const FragDesc* ds[4] = {&dd, &da, &db, &dc};
  float a[kMaxNe], b[kMaxNe], c[kMaxNe], out[kMaxNe];
  race_user_read(ax, da.ne * elem_bytes(da.elem));
  race_user_read(bx, db.ne * elem_bytes(db.elem));
  race_user_read(cx, dc.ne * elem_bytes(dc.elem));
  for (unsigned i = 0; i < da.ne; ++i) a[i] = to_float(da, ax, (int)i);
  for (unsigned i = 0; i < db.ne; ++i) b[i] = to_float(db, bx, (int)i);
  for (unsigned i = 0; i < dc.ne; ++i) c[i] = to_float(dc, cx, (int)i);
  const Lane L = mma_deposit(ds, a, b, c, file, line);
  __syncwarp(0xffffffffu, file, line);
  {
    RaceIgnore ignore;
    completed(L);
    const float* D = L.st->d[L.buf];
    const Table& t = table(dd);
    for (unsigned i = 0; i < dd.ne; ++i) out[i] = D[t.fwd[L.lane * dd.ne + i]];
  }
  race_user_write(dx, dd.ne * elem_bytes(dd.elem));
  for (unsigned i = 0; i < dd.ne; ++i) {
    if (dd.elem == Elem::Half) static_cast<__half*>(dx)[i] = __float2half(out[i]);
    else static_cast<float*>(dx)[i] = out[i];
  }
}

}  // namespace wmma_detail
}  // namespace simt
