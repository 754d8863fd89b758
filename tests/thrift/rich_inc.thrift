// Included by rich.thrift: types used across files.
namespace py rich_inc

enum Color { RED = 1, GREEN = 2, BLUE = 7 }

struct Point {
  1: i32 x,
  2: i32 y = 5,
}

typedef list<Point> Path

const i32 ORIGIN_X = 0
