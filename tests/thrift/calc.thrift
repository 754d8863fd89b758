// Small services for the server/client unit tests (tests/unit/test_thrift.c).
// The generated C is committed in tests/unit/thrift_gen/ (tests/thrift/regen).
exception Boom {
  1: string why,
}

service Calc {
  i64 add(1: i64 a, 2: i64 b),
  string echo(1: string s),
  // Blocks its worker until the test opens the gate; returns n.
  i32 gate(1: i32 n),
  void boom(1: string why) throws (1: Boom b),
  oneway void note(1: string s),
  // Asynchronous in the tests: answered from a reactor timer.
  i32 later(1: i32 n),
}

service Other {
  string hello(1: string name),
}
