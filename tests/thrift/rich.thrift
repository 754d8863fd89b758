// knit-thriftc test IDL: every type, every container shape, defaults,
// optional/required, unions, exceptions, includes, services with extends.
namespace py rich

include "rich_inc.thrift"

typedef i64 Id
typedef map<string, rich_inc.Point> Places

const string GREETING = "héllo \"q\"\n"
const i64 BIG = 9007199254740993
const double PI = 3.25
const bool YES = true
const list<i32> PRIMES = [2, 3, 5, 7]
const map<string, i32> WEIGHTS = {"a": 1, "b": 2}
const rich_inc.Point UNIT = {"x": 1, "y": 1}
const rich_inc.Color FAV = rich_inc.Color.BLUE

enum Kind { NONE = 0, SMALL = 1, LARGE = 100, NEG = -3 }

struct Scalars {
  1: bool b,
  2: i8 i8v,
  3: i16 i16v,
  4: i32 i32v,
  5: i64 i64v,
  6: double d,
  7: string s,
  8: binary bin,
  9: Kind kind,
  10: rich_inc.Color color,
}

struct Defaults {
  1: i32 n = 42,
  2: string s = "dflt",
  3: list<string> names = ["a", "b"],
  4: rich_inc.Point p = {"x": 3},
  5: optional i32 opt = 9,
  6: bool flag = true,
  7: double ratio = 0.5,
  8: Kind kind = Kind.LARGE,
  9: map<i32, string> m = {1: "one"},
}

union Choice {
  1: i32 number,
  2: string text,
  3: rich_inc.Point point,
}

exception Oops {
  1: string message,
  2: i32 code,
}

struct Containers {
  1: list<bool> lb,
  2: list<i8> l8,
  3: list<i16> l16,
  4: list<i32> l32,
  5: list<i64> l64,
  6: list<double> ld,
  7: list<string> ls,
  8: set<i32> si,
  9: set<binary> sb,
  10: map<string, i64> msi,
  11: map<i64, rich_inc.Point> mip,
  12: list<list<i32>> lli,
  13: map<string, list<rich_inc.Point>> mslp,
  14: list<map<i16, bool>> lmb,
  15: rich_inc.Path path,
  16: Places places,
  17: list<Choice> choices,
  18: map<rich_inc.Color, double> mcd,
  19: set<bool> setb,
  20: list<Scalars> lsc,
}

struct Everything {
  1: required Id id,
  2: optional string note,
  3: Scalars scalars,
  4: Containers containers,
  5: optional Choice choice,
  6: Defaults defaults,
  30: list<i32> far_field,
  200: i32 big_id,
  7: optional Oops oops,
}

service Base {
  i32 ping(1: i32 n),
}

service Rich extends Base {
  Everything echo(1: Everything e),
  i64 add(1: i64 a, 2: i64 b),
  Choice pick(1: string which) throws (1: Oops oops),
  void nothing(),
  oneway void fire(1: string s, 2: list<i32> xs),
}
