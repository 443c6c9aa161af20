// common/curves.h — curves.png of a run: loss and accuracy per epoch, train vs test, read from
// the run's metrics.csv and drawn by gnuplot (the pngcairo terminal of Debian's gnuplot-nox),
// run as a subprocess with a generated script. Plotting is a nicety: when gnuplot is missing
// or fails, training goes on and the caller prints the returned one-line warning.
#pragma once
#include <string>

namespace vit {

// Draws DIR/curves.png from DIR/metrics.csv (written to a temporary name, then renamed).
// Returns "" on success, else a one-line warning saying what went wrong and what to install.
std::string draw_curves(const std::string& dir);

// The gnuplot script draw_curves runs (exposed for tests and for users who want to restyle).
std::string curves_script(const std::string& csv, const std::string& png);

}  // namespace vit
