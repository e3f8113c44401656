// The Verilator driver of bitsnn's co-simulation harness (sim/cosim/harness.py, sim/cosim/native.py).
//
// The harness does the per-image work inside the model; this program only clocks it and moves
// batches: it writes a batch of images through the load port, pulses go, clocks until busy falls
// and reads each image's record and spike vector back through the read port. No VPI, no
// interpreter: the model runs at Verilator's own speed.
//
//   bitsnn_harness_sim IN OUT [PROGRESS]
//
// IN:  "BSNNIMG1", u32 images, u32 pixels per image, u32 batch depth, then images x pixels bytes.
// OUT: "BSNNREC1", u32 images, u32 record words, u32 spike words, f64 seconds clocking the
//      model, then per image its record (u32 words, bit 0 of word 0 first) and spike vector.
// PROGRESS: print a line every that many images (0: never).

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "Vharness.h"
#include "verilated.h"

namespace {

// A port's value as 32-bit words (Verilator: C/S/I/QData integers, VlWide arrays above 64 bits).
template <typename T>
void get_words(const T& v, uint32_t* out, size_t n) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t x = static_cast<uint64_t>(v);
        for (size_t i = 0; i < n; i++) out[i] = i < 2 ? static_cast<uint32_t>(x >> (32 * i)) : 0;
    } else {
        for (size_t i = 0; i < n; i++) out[i] = v[i];
    }
}

template <typename T>
void set_words(T& v, const uint32_t* in, size_t n) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t x = 0;
        for (size_t i = 0; i < n && i < 2; i++) x |= static_cast<uint64_t>(in[i]) << (32 * i);
        v = static_cast<T>(x);
    } else {
        for (size_t i = 0; i < n; i++) v[i] = in[i];
    }
}

template <typename T>
constexpr size_t words_of() {
    if constexpr (std::is_integral_v<T>) return sizeof(T) <= 4 ? 1 : 2;
    else return T::Words;
}

bool read_all(FILE* f, void* p, size_t n) { return std::fread(p, 1, n, f) == n; }

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s IN OUT [PROGRESS]\n", argv[0]);
        return 2;
    }
    long progress = argc > 3 ? std::atol(argv[3]) : 0;
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) {
        std::fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    char magic[8];
    uint32_t head[3];
    if (!read_all(in, magic, 8) || std::memcmp(magic, "BSNNIMG1", 8) || !read_all(in, head, sizeof head)) {
        std::fprintf(stderr, "%s: not a harness image file\n", argv[1]);
        return 2;
    }
    const uint32_t n_images = head[0], n_pixels = head[1], batch = head[2];
    std::vector<uint8_t> pixels(static_cast<size_t>(n_images) * n_pixels);
    if (!read_all(in, pixels.data(), pixels.size())) {
        std::fprintf(stderr, "%s: truncated\n", argv[1]);
        return 2;
    }
    std::fclose(in);

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vharness>(ctx.get());
    using LoadT = std::remove_reference_t<decltype(top->load_data)>;
    using RecT = std::remove_reference_t<decltype(top->read_record)>;
    using SpkT = std::remove_reference_t<decltype(top->read_spikes)>;
    const size_t load_words = words_of<LoadT>(), rec_words = words_of<RecT>(), spk_words = words_of<SpkT>();
    if ((n_pixels + 3) / 4 > load_words) {
        std::fprintf(stderr, "%u pixels do not fit the harness's %zu-word image port\n", n_pixels, load_words);
        return 2;
    }

    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
    };
    top->rst = 1;
    top->load_en = 0;
    top->go = 0;
    for (int i = 0; i < 3; i++) tick();
    top->rst = 0;

    std::vector<uint32_t> out(static_cast<size_t>(n_images) * (rec_words + spk_words));
    std::vector<uint32_t> img(load_words);
    double clocked_s = 0;
    const auto t_start = std::chrono::steady_clock::now();
    for (uint32_t first = 0; first < n_images; first += batch) {
        const uint32_t n = std::min(batch, n_images - first);
        top->load_en = 1;
        for (uint32_t i = 0; i < n; i++) {
            std::fill(img.begin(), img.end(), 0);
            std::memcpy(img.data(), &pixels[static_cast<size_t>(first + i) * n_pixels], n_pixels);  // little-endian host
            top->load_addr = i;
            set_words(top->load_data, img.data(), load_words);
            tick();
        }
        top->load_en = 0;
        top->count = n;
        top->go = 1;
        tick();
        top->go = 0;
        const auto t0 = std::chrono::steady_clock::now();
        while (top->busy) tick();
        clocked_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (uint32_t i = 0; i < n; i++) {
            top->read_addr = i;
            tick();
            uint32_t* o = &out[static_cast<size_t>(first + i) * (rec_words + spk_words)];
            get_words(top->read_record, o, rec_words);
            get_words(top->read_spikes, o + rec_words, spk_words);
        }
        const uint32_t done = first + n;
        if (progress > 0 && (done / progress > first / progress || done == n_images)) {
            double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
            std::printf("[cosim] %u/%u images, %.1f s\n", done, n_images, dt);
            std::fflush(stdout);
        }
    }
    top->final();

    FILE* f = std::fopen(argv[2], "wb");
    if (!f) {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    const uint32_t ohead[3] = {n_images, static_cast<uint32_t>(rec_words), static_cast<uint32_t>(spk_words)};
    bool ok = std::fwrite("BSNNREC1", 1, 8, f) == 8 && std::fwrite(ohead, sizeof ohead, 1, f) == 1 &&
              std::fwrite(&clocked_s, sizeof clocked_s, 1, f) == 1 &&
              std::fwrite(out.data(), sizeof(uint32_t), out.size(), f) == out.size();
    ok = (std::fclose(f) == 0) && ok;
    return ok ? 0 : 2;
}
