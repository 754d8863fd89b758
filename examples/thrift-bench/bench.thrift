// Copy of ../shared/thrift/bench.thrift (the benchmark fixture shared with the peers).
// The Thrift benchmark service: the same IDL serves knit's benchmark server and the peers it is measured against.
namespace cpp bench
namespace py bench

service Bench {
  // Returns its argument unchanged.
  string echo(1: string s),
  // Returns a + b.
  i64 add(1: i64 a, 2: i64 b),
  // Blocks the handler for `us` microseconds (a stand-in for blocking work such as a query).
  void sleep_us(1: i32 us),
}
