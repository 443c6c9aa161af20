#include "common/curves.h"

#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace vit {

// Single quotes in gnuplot strings are escaped by doubling them.
static std::string gp_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("''") : std::string(1, c);
  return o + "'";
}
static std::string sh_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string curves_script(const std::string& csv, const std::string& png) {
  std::ostringstream s;
  s << "set datafile separator ','\n"
    << "set terminal pngcairo size 1200,450 font ',10'\n"
    << "set output " << gp_quote(png) << "\n"
    << "set multiplot layout 1,2 title 'vit.cu training curves'\n"
    << "set grid\n"
    << "set xlabel 'epoch'\n"
    // Whole epochs only: unit tics for short runs, integer labels always.
    << "stats " << gp_quote(csv) << " skip 1 using 1 nooutput\n"
    << "if (STATS_max <= 12) { set xtics 1 } else { set format x '%.0f' }\n"
    << "set key top right\n"
    << "set ylabel 'loss'\n"
    // `skip 1`: the header line; columns as in metrics.csv's header.
    << "plot " << gp_quote(csv) << " skip 1 using 1:2 with linespoints pt 7 ps 0.5 lw 2 title 'train', \\\n"
    << "     '' skip 1 using 1:4 with linespoints pt 7 ps 0.5 lw 2 title 'test'\n"
    << "set ylabel 'accuracy'\n"
    << "set key bottom right\n"
    << "set yrange [0:1]\n"
    << "plot " << gp_quote(csv) << " skip 1 using 1:3 with linespoints pt 7 ps 0.5 lw 2 title 'train', \\\n"
    << "     '' skip 1 using 1:5 with linespoints pt 7 ps 0.5 lw 2 title 'test'\n"
    << "unset multiplot\n"
    << "set output\n";
  return s.str();
}

std::string draw_curves(const std::string& dir) {
  if (system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot not found: curves.png not drawn (install gnuplot-nox; metrics.csv has the "
           "numbers)";
  const std::string csv = dir + "/metrics.csv", png = dir + "/curves.png";
  const std::string tmp_png = png + ".tmp", script_path = dir + "/curves.gp";
  {
    std::ofstream f(script_path);
    f << curves_script(csv, tmp_png);
    if (!f) return "cannot write " + script_path + ": curves.png not drawn";
  }
  std::string cmd = "gnuplot " + sh_quote(script_path) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return std::string("cannot run gnuplot: ") + strerror(errno);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int st = pclose(p);
  if (st != 0 || rename(tmp_png.c_str(), png.c_str()) != 0) {
    remove(tmp_png.c_str());
    for (char& c : out) if (c == '\n') c = ' ';
    return "gnuplot failed, curves.png not drawn: " + out.substr(0, 200);
  }
  return "";
}

}  // namespace vit
