#include "common/image_check.h"

#include <algorithm>

namespace vit {

// Where the data after the SOI marker starts, 0 when there is none. stb finds SOI as it finds
// every marker: 0xFF, any number of 0xFF fill bytes, then the marker byte (so FF FF D8 is a JPEG
// to stb too, and is checked like one).
static size_t after_soi(const uint8_t* d, size_t n) {
  if (n < 2 || d[0] != 0xFF) return 0;
  size_t i = 1;
  while (i < n && d[i] == 0xFF) ++i;
  return i < n && d[i] == 0xD8 ? i + 1 : 0;
}

bool is_jpeg(const uint8_t* data, size_t n) { return after_soi(data, n) != 0; }

bool is_png(const uint8_t* data, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return n >= 8 && std::equal(sig, sig + 8, data);
}

namespace {

// The marker walk; *w, *h (when not null) receive the first frame header's size, 0 without one.
std::string jpeg_walk(const uint8_t* d, size_t n, uint32_t* w = nullptr, uint32_t* h = nullptr) {
  if (w) *w = *h = 0;
  bool defined[2][4] = {};   // Huffman tables [class: DC, AC][id] defined so far
  bool progressive = false;  // SOF2 (the only progressive frame stb decodes)
  size_t i = after_soi(d, n);
  while (i < n) {
    // Next marker: stb skips anything that is not 0xFF between segments, then fill bytes.
    if (d[i] != 0xFF) { ++i; continue; }
    while (i < n && d[i] == 0xFF) ++i;
    if (i >= n) break;
    const uint8_t m = d[i++];
    if (m == 0xD9) break;                                    // EOI: stb stops here
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (i + 2 > n) break;
    const size_t len = (size_t)d[i] << 8 | d[i + 1];  // includes its own 2 bytes
    if (m == 0xC4) {
      // DHT: tables of [class/id][16 counts][sum(counts) symbols] while the segment has bytes
      // left; like stb, a table that starts inside the segment reads its counts on past its
      // end (past the file they are 0, as stb's reader returns).
      size_t t = i + 2;
      for (int table = 0; t < i + len; ++table) {
        size_t symbols = 0;
        for (size_t k = 1; k <= 16; ++k) symbols += t + k < n ? d[t + k] : 0;
        if (symbols > 256)
          return "corrupt JPEG: Huffman table " + std::to_string(table) + " of the DHT segment at byte " +
                 std::to_string(i - 2) + " defines " + std::to_string(symbols) +
                 " codes (at most 256)";
        if (t < n && (d[t] >> 4) <= 1 && (d[t] & 15) <= 3) defined[d[t] >> 4][d[t] & 15] = true;
        t += 17 + symbols;
      }
    }
    if (m == 0xC2) progressive = true;
    if (m == 0xDA && i + 3 <= n) {
      // SOS: [len][Ns][Ns x (component, DC table << 4 | AC table)][Ss][Se][Ah << 4 | Al]. stb
      // decodes a scan with the tables it names whether or not a DHT defined them (from
      // uninitialised memory in 2.27), so a scan must name defined tables: baseline scans both,
      // progressive DC first scans the DC table, progressive AC scans the AC table.
      const size_t ns = d[i + 2];
      if (i + 6 + 2 * ns <= n) {
        const uint8_t ss = d[i + 3 + 2 * ns], ah = d[i + 5 + 2 * ns] >> 4;
        const bool need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss > 0;
        for (size_t k = 0; k < ns; ++k) {
          const int td = d[i + 4 + 2 * k] >> 4, ta = d[i + 4 + 2 * k] & 15;
          const char* which = need_dc && td <= 3 && !defined[0][td] ? "DC" :
                              need_ac && ta <= 3 && !defined[1][ta] ? "AC" : nullptr;
          if (which)
            return std::string("corrupt JPEG: the scan at byte ") + std::to_string(i - 2) + " uses " +
                   which + " Huffman table " + std::to_string(*which == 'D' ? td : ta) +
                   ", which no DHT segment before it defines";
        }
      }
    }
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && w && *w == 0 && *h == 0 && i + 7 <= n) {  // [len][precision][height][width]
      *h = (uint32_t)d[i + 3] << 8 | d[i + 4];
      *w = (uint32_t)d[i + 5] << 8 | d[i + 6];
    }
    i += len < 2 ? 2 : len;
    if (m == 0xDA) {
      // Entropy-coded data follows the scan header: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0-D7 a
      // restart marker inside the data, any other 0xFF xx the marker that ends it.
      while (i < n) {
        if (d[i] != 0xFF) { ++i; continue; }
        size_t j = i + 1;
        while (j < n && d[j] == 0xFF) ++j;
        if (j < n && (d[j] == 0x00 || (d[j] >= 0xD0 && d[j] <= 0xD7))) { i = j + 1; continue; }
        break;  // i is at the 0xFF of the next marker
      }
    }
  }
  return "";
}

uint32_t be32(const uint8_t* p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

// The bytes of all IDAT chunks, or a problem. Chunks are [length][type][data][crc]; stb reads
// them in order until IEND (or the end of the data).
std::string png_chunks(const uint8_t* d, size_t n, uint64_t* idat) {
  size_t i = 8;
  *idat = 0;
  while (i + 8 <= n) {
    const uint64_t len = be32(d + i);
    const bool is_idat = d[i + 4] == 'I' && d[i + 5] == 'D' && d[i + 6] == 'A' && d[i + 7] == 'T';
    const bool is_iend = d[i + 4] == 'I' && d[i + 5] == 'E' && d[i + 6] == 'N' && d[i + 7] == 'D';
    if (len > n - (i + 8))
      return "corrupt or truncated PNG: chunk at byte " + std::to_string(i) + " claims " +
             std::to_string(len) + " bytes, the file has " + std::to_string(n - (i + 8)) + " after it";
    if (is_idat) *idat += len;
    if (is_iend) break;
    i += 12 + (size_t)len;
  }
  return "";
}

}  // namespace

std::string image_problem(const uint8_t* d, size_t n) {
  if (is_jpeg(d, n)) return jpeg_walk(d, n);
  if (is_png(d, n)) {
    uint64_t idat;
    return png_chunks(d, n, &idat);
  }
  return "";
}

bool header_size(const uint8_t* d, size_t n, uint32_t* w, uint32_t* h) {
  if (is_png(d, n)) {
    if (n < 24) return false;
    *w = be32(d + 16);  // IHDR is the first chunk: [len][IHDR][width][height]
    *h = be32(d + 20);
    return true;
  }
  if (is_jpeg(d, n)) {
    jpeg_walk(d, n, w, h);
    return *w || *h;
  }
  if (n >= 26 && d[0] == 'B' && d[1] == 'M') {
    auto le32 = [&](size_t o) { return (uint32_t)d[o] | (uint32_t)d[o + 1] << 8 | (uint32_t)d[o + 2] << 16 | (uint32_t)d[o + 3] << 24; };
    if (le32(14) == 12) {  // OS/2 BITMAPCOREHEADER: uint16 width, height
      *w = (uint32_t)d[18] | (uint32_t)d[19] << 8;
      *h = (uint32_t)d[20] | (uint32_t)d[21] << 8;
      return true;
    }
    // BITMAPINFOHEADER and later: int32 width, height (height < 0: rows top-down)
    const int32_t bw = (int32_t)le32(18), bh = (int32_t)le32(22);
    *w = bw < 0 ? 0u - (uint32_t)bw : (uint32_t)bw;
    *h = bh < 0 ? 0u - (uint32_t)bh : (uint32_t)bh;
    return true;
  }
  return false;
}

std::string image_size_problem(const uint8_t* d, size_t n, uint32_t w, uint32_t h) {
  const uint64_t pixels = (uint64_t)w * (uint64_t)h;
  uint64_t most;  // the most pixels these bytes can encode, with a 2x margin
  if (is_png(d, n)) {
    uint64_t idat;
    if (!png_chunks(d, n, &idat).empty()) return png_chunks(d, n, &idat);
    most = 2 * 1032 * 8 * idat;  // 1-bit pixels, deflate's largest ratio
  } else if (is_jpeg(d, n)) {
    most = 2 * 64 * 8 * (uint64_t)n;  // one bit per 8x8 block
  } else {
    most = 2 * 8 * (uint64_t)n;  // BMP: one bit per pixel at best
  }
  most += 4096;  // tiny images: headers dominate
  if (pixels > most)
    return std::to_string(w) + "x" + std::to_string(h) + " pixels cannot be in a file of " +
           std::to_string(n) + " bytes (corrupt or truncated image)";
  return "";
}

}  // namespace vit
