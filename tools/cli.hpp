// Entry points of the `convkit` subcommands; each returns the process exit status
// (0 success, 1 failure, 2 invalid input or usage).
#pragma once
#include <string>
#include <vector>

namespace convkit::tools {
int run_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);
// Maps an exception to the exit status and prints it as one line on stderr.
int report_error(const char* command);
}  // namespace convkit::tools
