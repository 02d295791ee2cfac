// The `convkit` program: `convkit run` (one convolution from .npy files) and `convkit bench`
// (benchdnn-compatible correctness and performance driver).
#include <iostream>
#include <string>
#include <vector>

#include "cli.hpp"

int main(int argc, char** argv) {
    const std::string usage =
        "usage: convkit run [options]    one convolution from .npy files (convkit run --help)\n"
        "       convkit bench [options]  benchdnn-style correctness/performance driver (convkit bench --help)\n";
    if (argc < 2) {
        std::cerr << usage;
        return 2;
    }
    std::string cmd = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "run") return convkit::tools::run_command(args);
    if (cmd == "bench") return convkit::tools::bench_command(args);
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        std::cout << usage;
        return 0;
    }
    std::cerr << "convkit: unknown command '" << cmd << "' (expected run or bench; see convkit --help)\n";
    return 2;
}
