// common/cli.h — the command-line parser of vit_train and vit_predict, and the model flags they
// share.
//
// A program builds a table of flags (name -> handler) and calls parse(); the same table prints
// the usage, so a flag and its help cannot drift apart. Accepted spellings:
//   --flag value   --flag=value   --switch   --bool / --no-bool   --bool=true|false   -h --help
//   --             ends the flags: everything after it is positional
// Every mistake is a vit::Error with one line naming the flag: unknown flag, missing value,
// a value that is not a number, a value given to a switch.
//
// Model flags are kept as the list of fields the user set, not as a finished Config, because
// the meaning of "set" matters when a weight file is loaded: the file decides the architecture
// and only the flags actually typed may disagree with it (see common/weights.h).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"

namespace vit {
namespace cli {

class Parser {
 public:
  // `synopsis` is the first usage line after "usage: ", e.g. "vit_predict --weights FILE IMAGE...";
  // `description` follows it (may be empty).
  Parser(std::string program, std::string synopsis, std::string description = "");

  // Starts a titled group in the usage ("Model", "Training", ...).
  void section(const std::string& title);
  // --name VALUE: `set` receives the raw value text (use the parse_* helpers below).
  void value(const std::string& name, const std::string& metavar, const std::string& help,
             std::function<void(const std::string&)> set);
  // --name with no value.
  void flag(const std::string& name, const std::string& help, std::function<void()> set);
  // --name / --no-name (and --name=true|false).
  void boolean(const std::string& name, const std::string& help, std::function<void(bool)> set);

  // Parses argv[1 .. argc); returns the positional arguments in order. Throws vit::Error.
  // -h / --help only sets help_requested() (the caller prints usage() and exits 0).
  std::vector<std::string> parse(int argc, const char* const* argv);
  std::vector<std::string> parse(const std::vector<std::string>& args);  // args without argv[0]
  bool help_requested() const { return help_; }
  std::string usage() const;
  const std::string& program() const { return program_; }

 private:
  enum class Kind { Value, Flag, Bool };
  struct Entry {
    std::string name, metavar, help, section;
    Kind kind;
    std::function<void(const std::string&)> set_value;
    std::function<void()> set_flag;
    std::function<void(bool)> set_bool;
  };
  const Entry* lookup(const std::string& name) const;
  void add(Entry e);
  std::string program_, synopsis_, description_, section_;
  std::vector<Entry> entries_;
  bool help_ = false;
};

// Value parsers: one-line vit::Error naming `flag` ("--hidden: 'abc' is not an integer").
int parse_int(const std::string& flag, const std::string& v);
int64_t parse_int64(const std::string& flag, const std::string& v);
float parse_float(const std::string& flag, const std::string& v);
double parse_double(const std::string& flag, const std::string& v);
bool parse_bool(const std::string& flag, const std::string& v);  // true|false|1|0|yes|no
void parse_float3(const std::string& flag, const std::string& v, float out[3]);  // "a,b,c"
// One of `choices`, else an error listing them.
std::string parse_choice(const std::string& flag, const std::string& v,
                         const std::vector<std::string>& choices);

// The model flags of issue 3: --preset --image-size --patch-size --classes --hidden --layers
// --heads --mlp --dropout --attn-dropout --init-std --gelu --ln-eps --final-ln/--no-final-ln
// --qkv-bias/--no-qkv-bias --mean a,b,c --std a,b,c.
struct ModelFlags {
  std::string preset_name;  // empty when --preset was not given
  // Only the fields given on the command line, keyed and formatted as config_to_metadata()
  // writes them ("hidden" -> "128", "mean" -> "0.5,0.5,0.5"); values are checked when parsed.
  std::map<std::string, std::string> overrides;

  void add_to(Parser& p);  // registers the flags, under a "Model" section
  bool given(const std::string& field) const { return overrides.count(field) != 0; }
  // preset (or `default_preset` when none was given), then the overrides, then validate().
  Config config(const std::string& default_preset = "basic") const;
  // Same without validate(): the base a weight file's architecture is merged into.
  Config unvalidated(const std::string& default_preset = "basic") const;
};

}  // namespace cli
}  // namespace vit
