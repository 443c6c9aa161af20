// common/image_check.h — structural checks of image files, run on every file before stb_image
// (Debian 12's libstb-dev, v2.27) parses any of it (common/image.cpp). Each check closes a way
// in which a hostile file makes that stb_image write out of bounds or allocate far more than
// the file could hold; all of them were found by fuzz/fuzz_image.cpp (docs/reliability.md).
//
//   JPEG  a DHT segment whose 16 code-length counts add up to more than 256 symbols: stb 2.27
//         builds the table without checking and writes up to 4 KB past it (upstream v2.28
//         rejects such tables). Every DHT stb could reach is checked: the marker structure is
//         walked as stb walks it (segments by their length, garbage between segments skipped,
//         entropy-coded data after SOS skipped to the next marker). And a scan that names a
//         Huffman table no DHT before it defined: stb decodes it with its uninitialised state
//         and indexes its symbol table out of bounds (upstream v2.28 bounds that index).
//   PNG   a chunk whose length runs past the end of the file: stb allocates the claimed
//         length (up to 2 GB) before reading the chunk.
//   all   a size claim the file cannot back: stb allocates the whole image from the header
//         before it reads a pixel, so the pixel count is checked against what the file's bytes
//         can encode at the format's best compression (PNG: deflate's 1032:1 over the IDAT
//         bytes; JPEG: one bit per 8x8 block; BMP: one bit per pixel), with a 2x margin.
// A file that passes may still be damaged: that is stb's to report.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vit {

bool is_jpeg(const uint8_t* data, size_t n);  // starts with an SOI marker: FF (FF...) D8, as stb reads it
bool is_png(const uint8_t* data, size_t n);   // starts with the 8-byte PNG signature

// Empty when data[0..n) passes the structural checks above (JPEG tables, PNG chunks), else one
// line saying what is wrong.
std::string image_problem(const uint8_t* data, size_t n);
// The size the header claims (PNG's IHDR, JPEG's first frame header, BMP's info header), read
// here so that a claim too large for stb (which refuses images over 1 GB with a vague
// message) still gets a clear one; false for other data.
bool header_size(const uint8_t* data, size_t n, uint32_t* w, uint32_t* h);
// Empty when a claim of w x h pixels is one the file's bytes can back (see above), else one line.
std::string image_size_problem(const uint8_t* data, size_t n, uint32_t w, uint32_t h);

}  // namespace vit
