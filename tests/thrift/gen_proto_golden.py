#!/usr/bin/python3
"""Generate golden bytes for knit's Thrift protocol unit test.

Each case is a list of protocol operations. This script replays them through
Apache Thrift's own Python protocols (TBinaryProtocol strict, TCompactProtocol)
and writes tests/unit/thrift_proto_golden.h holding, per case, the operations
as a C table plus the bytes each protocol produced. The C test replays the same
table through knit's writer (bytes must match) and reader (values must match).

Run with Debian's python3-thrift:  /usr/bin/python3 tests/thrift/gen_proto_golden.py
"""
import math
import os
import struct
import sys

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.protocol.TProtocol import TType
from thrift.transport import TTransport
from thrift.Thrift import TMessageType

TT = {
    'BOOL': TType.BOOL, 'BYTE': TType.BYTE, 'DOUBLE': TType.DOUBLE, 'I16': TType.I16,
    'I32': TType.I32, 'I64': TType.I64, 'STRING': TType.STRING, 'STRUCT': TType.STRUCT,
    'MAP': TType.MAP, 'SET': TType.SET, 'LIST': TType.LIST,
}


def replay(proto, ops):
    for op in ops:
        k = op[0]
        if k == 'msg':
            proto.writeMessageBegin(op[1], op[2], op[3])
        elif k == 'msg_end':
            proto.writeMessageEnd()
        elif k == 'sb':
            proto.writeStructBegin('S')
        elif k == 'se':
            proto.writeStructEnd()
        elif k == 'fb':
            proto.writeFieldBegin('f', TT[op[1]], op[2])
        elif k == 'fe':
            proto.writeFieldEnd()
        elif k == 'stop':
            proto.writeFieldStop()
        elif k == 'mb':
            proto.writeMapBegin(TT[op[1]], TT[op[2]], op[3])
        elif k == 'me':
            proto.writeMapEnd()
        elif k == 'lb':
            proto.writeListBegin(TT[op[1]], op[2])
        elif k == 'le':
            proto.writeListEnd()
        elif k == 'tb':
            proto.writeSetBegin(TT[op[1]], op[2])
        elif k == 'te':
            proto.writeSetEnd()
        elif k == 'bool':
            proto.writeBool(op[1])
        elif k == 'byte':
            proto.writeByte(op[1])
        elif k == 'i16':
            proto.writeI16(op[1])
        elif k == 'i32':
            proto.writeI32(op[1])
        elif k == 'i64':
            proto.writeI64(op[1])
        elif k == 'double':
            proto.writeDouble(op[1])
        elif k == 'bin':
            proto.writeBinary(op[1])
        else:
            raise ValueError(k)


def encode(factory, ops):
    buf = TTransport.TMemoryBuffer()
    replay(factory(buf), ops)
    return buf.getvalue()


def field(t, fid, *value_ops):
    return [('fb', t, fid)] + list(value_ops) + [('fe',)]


def struct(*fields):
    out = [('sb',)]
    for f in fields:
        out += f
    return out + [('stop',), ('se',)]


CASES = []


def case(name, ops):
    CASES.append((name, ops))


# scalars at their edges, each in a one-field struct
for v in (0, 1, -1, 127, -128):
    case('byte_%d' % (v & 0xff), struct(field('BYTE', 1, ('byte', v))))
for v in (0, 1, -1, 300, -300, 32767, -32768):
    case('i16_%d' % (v & 0xffff), struct(field('I16', 1, ('i16', v))))
for v in (0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -2**31, 123456789):
    case('i32_%d' % (v & 0xffffffff), struct(field('I32', 1, ('i32', v))))
for v in (0, 1, -1, 2**63 - 1, -2**63, 2**35, -(2**40) + 7):
    case('i64_%d' % (v & 0xffffffffffffffff), struct(field('I64', 1, ('i64', v))))
for i, v in enumerate((0.0, -0.0, 1.5, -2.25, 1e300, 5e-324, math.inf, -math.inf, math.pi)):
    case('double_%d' % i, struct(field('DOUBLE', 1, ('double', v))))
for i, v in enumerate((b'', b'a', 'h\u00e9llo \u2603'.encode(), bytes(range(256)), b'x' * 200)):
    case('binary_%d' % i, struct(field('STRING', 1, ('bin', v))))

# bools in field headers, field-id deltas (short, long, negative, decreasing)
case('bools', struct(field('BOOL', 1, ('bool', True)), field('BOOL', 2, ('bool', False)),
                     field('BOOL', 20, ('bool', True)), field('BOOL', -3, ('bool', False))))
case('field_ids', struct(field('I32', 1, ('i32', 1)), field('I32', 15, ('i32', 2)),
                         field('I32', 16, ('i32', 3)), field('I32', 31, ('i32', 4)),
                         field('I32', 47, ('i32', 5)), field('I32', 10, ('i32', 6)),
                         field('I32', -1, ('i32', 7)), field('I32', 32767, ('i32', 8)),
                         field('I32', -32768, ('i32', 9))))
# nested structs: compact keeps one last-field-id per level
inner = struct(field('I32', 5, ('i32', 50)), field('BOOL', 6, ('bool', True)))
case('nested', struct(field('I32', 3, ('i32', 30)),
                      field('STRUCT', 4, *struct(field('STRUCT', 1, *inner))),
                      field('I32', 5, ('i32', 31)), field('BOOL', 30, ('bool', False))))
# containers
case('list_bool', struct(field('LIST', 1, ('lb', 'BOOL', 3), ('bool', True), ('bool', False),
                                ('bool', True), ('le',))))
case('list_empty', struct(field('LIST', 1, ('lb', 'I32', 0), ('le',))))
for n in (14, 15, 300):
    case('list_i32_%d' % n, struct(field('LIST', 1, ('lb', 'I32', n),
                                         *[('i32', i * 7 - 50) for i in range(n)], ('le',))))
case('set_string', struct(field('SET', 2, ('tb', 'STRING', 2), ('bin', b'a'), ('bin', b'bc'),
                                ('te',))))
case('map_empty', struct(field('MAP', 1, ('mb', 'STRING', 'I64', 0), ('me',))))
case('map_str_i64', struct(field('MAP', 1, ('mb', 'STRING', 'I64', 2), ('bin', b'k1'),
                                 ('i64', 1), ('bin', b'k2'), ('i64', -2), ('me',))))
case('map_i16_list', struct(field('MAP', 9, ('mb', 'I16', 'LIST', 1), ('i16', 7),
                                  ('lb', 'DOUBLE', 2), ('double', 1.0), ('double', 2.0), ('le',),
                                  ('me',))))
case('list_struct', struct(field('LIST', 1, ('lb', 'STRUCT', 2),
                                 *struct(field('BOOL', 1, ('bool', True))),
                                 *struct(field('I16', 2, ('i16', -2))), ('le',))))
case('list_map', struct(field('LIST', 1, ('lb', 'MAP', 2), ('mb', 'BYTE', 'BOOL', 1),
                              ('byte', 1), ('bool', False), ('me',), ('mb', 'BYTE', 'BOOL', 0),
                              ('me',), ('le',))))
# messages
for t, tn in ((TMessageType.CALL, 'call'), (TMessageType.REPLY, 'reply'),
              (TMessageType.EXCEPTION, 'exception'), (TMessageType.ONEWAY, 'oneway')):
    case('msg_' + tn, [('msg', 'echo', t, 7)] + struct(field('STRING', 1, ('bin', b'hi')))
         + [('msg_end',)])
case('msg_seqid_neg', [('msg', 'add', TMessageType.CALL, -5)] + struct() + [('msg_end',)])
case('msg_seqid_big', [('msg', 'a' * 40, TMessageType.CALL, 2**31 - 1)] + struct()
     + [('msg_end',)])


def c_bytes(b):
    lines = []
    for i in range(0, len(b), 16):
        lines.append('    ' + ' '.join('0x%02x,' % x for x in b[i:i + 16]))
    return '\n'.join(lines) if lines else '    0'


def c_str(b):
    return '"' + ''.join('\\x%02x' % x for x in b) + '"'


def c_double(v):
    if math.isinf(v):
        return '(-INFINITY)' if v < 0 else 'INFINITY'
    return repr(v) if v != 0 or math.copysign(1, v) > 0 else '(-0.0)'


def c_op(op):
    k = op[0]
    tt = lambda n: 'KNIT_TT_' + n
    if k == 'msg':
        nm = op[1].encode()
        return '{G_MSG, %d, 0, 0, %d, 0, %s, %d}' % (op[2], op[3], c_str(nm), len(nm))
    if k in ('msg_end', 'sb', 'se', 'fe', 'stop', 'me', 'le', 'te'):
        return '{G_%s, 0, 0, 0, 0, 0, NULL, 0}' % k.upper()
    if k == 'fb':
        return '{G_FB, %s, %d, 0, 0, 0, NULL, 0}' % (tt(op[1]), op[2])
    if k == 'mb':
        return '{G_MB, %s, %s, %d, 0, 0, NULL, 0}' % (tt(op[1]), tt(op[2]), op[3])
    if k in ('lb', 'tb'):
        return '{G_%s, %s, 0, %d, 0, 0, NULL, 0}' % (k.upper(), tt(op[1]), op[2])
    if k in ('bool', 'byte', 'i16', 'i32', 'i64'):
        v = int(op[1])
        lit = '%dLL' % v if v != -2**63 else '(-9223372036854775807LL - 1)'
        return '{G_%s, 0, 0, 0, %s, 0, NULL, 0}' % (k.upper(), lit)
    if k == 'double':
        return '{G_DOUBLE, 0, 0, 0, 0, %s, NULL, 0}' % c_double(op[1])
    if k == 'bin':
        return '{G_BIN, 0, 0, 0, 0, 0, %s, %d}' % (c_str(op[1]), len(op[1]))
    raise ValueError(k)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), '..', 'unit', 'thrift_proto_golden.h')
    binf = lambda t: TBinaryProtocol.TBinaryProtocol(t, strictRead=True, strictWrite=True)
    oldf = lambda t: TBinaryProtocol.TBinaryProtocol(t, strictRead=False, strictWrite=False)
    compf = TCompactProtocol.TCompactProtocol
    o = ['/* Generated by tests/thrift/gen_proto_golden.py with python3-thrift; do not edit. */',
         '/* Bytes are what Apache Thrift (Python) writes for each operation table. */', '']
    names = []
    for idx, (name, ops) in enumerate(CASES):
        b = encode(binf, ops)
        c = encode(compf, ops)
        o.append('static const struct gop ops_%d[] = {' % idx)
        o += ['    %s,' % c_op(op) for op in ops]
        o.append('};')
        o.append('static const uint8_t bin_%d[] = {\n%s\n};' % (idx, c_bytes(b)))
        o.append('static const uint8_t cmp_%d[] = {\n%s\n};' % (idx, c_bytes(c)))
        names.append((name, idx, len(ops), len(b), len(c)))
        if name.startswith('msg_'):
            old = encode(oldf, ops)
            o.append('static const uint8_t old_%d[] = {\n%s\n};' % (idx, c_bytes(old)))
    o.append('')
    o.append('static const struct gcase golden_cases[] = {')
    for name, idx, nops, nb, nc in names:
        old = ('old_%d, sizeof old_%d' % (idx, idx)) if name.startswith('msg_') else 'NULL, 0'
        o.append('    {"%s", ops_%d, %d, bin_%d, %d, cmp_%d, %d, %s},'
                 % (name, idx, nops, idx, nb, idx, nc, old))
    o.append('};')
    with open(out_path, 'w') as f:
        f.write('\n'.join(o) + '\n')
    print('%d cases -> %s' % (len(names), out_path))


if __name__ == '__main__':
    main()
