// The HTML report's roofline (tools/report.cpp) on fixed data, where the CLI test
// (tests/cli/test_bench_report.py) can only use the peaks its machine measures: the ceilings
// stay inside the plot and meet at the ridge whatever the peaks are, including a compute peak
// below the layers' own rates (what a peak measured on a busy machine can come out as).
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "report.hpp"

using namespace convkit;
using namespace convkit::tools;

namespace {

ReportData data_with_peaks(double gflops, double gbs) {
    ReportData d;
    d.engine = "cpu: test";
    d.memory.gbs = gbs;
    d.memory.note = "fixed";
    d.compute.push_back({"f32", gflops, "fixed"});
    for (int i = 0; i < 3; ++i) {
        ReportLayer l;
        l.config = "fwd f32 nhwc";
        l.name = "layer" + std::to_string(i);
        l.descriptor = "mb1ic16ih14oc32oh14kh3ph1";
        l.dir = "fwd";
        l.dt = "f32";
        l.tag = "nhwc";
        l.mb = 1;
        l.status = "ok";
        l.flops = 2.0e9 * (i + 1);
        l.bytes = 4.0e6 * (i + 1) * (i + 1);  // intensities 500, 250, 167 FLOP/byte
        l.ms = 10.0;                          // 200-600 GFLOP/s
        d.layers.push_back(l);
    }
    return d;
}

// The attributes x1, y1, x2, y2 of the first <line> whose class list holds `cls`.
bool line_coords(const std::string& html, const std::string& cls, double c[4]) {
    const std::regex re("<line class=\"ceiling " + cls +
                        "\" x1=\"([-0-9.e]+)\" y1=\"([-0-9.e]+)\" x2=\"([-0-9.e]+)\" y2=\"([-0-9.e]+)\"");
    std::smatch m;
    if (!std::regex_search(html, m, re)) return false;
    for (int i = 0; i < 4; ++i) c[i] = std::stod(m[i + 1].str());
    return true;
}

void expect_ceilings_meet(double gflops, double gbs) {
    SCOPED_TRACE("peaks " + std::to_string(gflops) + " GFLOP/s, " + std::to_string(gbs) + " GB/s");
    const std::string html = render_html(data_with_peaks(gflops, gbs));
    double mem[4], comp[4];
    ASSERT_TRUE(line_coords(html, "memory", mem));
    ASSERT_TRUE(line_coords(html, "compute", comp));
    // SVG y grows downwards: the memory ceiling rises from left to right to the flat compute one.
    EXPECT_LT(mem[0], mem[2]);
    EXPECT_LT(mem[3], mem[1]);
    EXPECT_EQ(comp[1], comp[3]);
    EXPECT_NEAR(mem[2], comp[0], 0.02);
    EXPECT_NEAR(mem[3], comp[1], 0.02);
    // Both inside the plot area (x 64..664, y 14..394).
    for (double y : {mem[3], comp[1]}) {
        EXPECT_GE(y, 14 - 1e-6);
        EXPECT_LE(y, 394 + 1e-6);
    }
}

TEST(ReportRoofline, CeilingsMeetAtTheRidge) { expect_ceilings_meet(2000, 50); }

// A compute peak below every layer's rate (200-600 GFLOP/s): the plot used to start above the
// roof, and the memory ceiling ran backwards below the plot.
TEST(ReportRoofline, ComputePeakBelowTheLayers) {
    expect_ceilings_meet(100, 50);
    expect_ceilings_meet(20, 50);
}

// A memory peak so high the ridge falls left of every layer, and one so low it falls right.
TEST(ReportRoofline, RidgeOutsideTheLayers) {
    expect_ceilings_meet(2000, 1e5);
    expect_ceilings_meet(2000, 0.5);
}

}  // namespace
