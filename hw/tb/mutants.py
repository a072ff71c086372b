"""RTL mutants: deliberate bugs the verification must catch (`make sim-mutants`).

Each mutant replaces one piece of text in one RTL file (in a temporary copy of hw/rtl) and
runs the suite CI runs (the reduced suite). It is killed when a build fails; `first`
names the builds most likely to fail, which run first (the rest follow, so a mutant that
survives has met the whole suite). A mutant documented `equivalent` cannot change any
observable behaviour; it is still run, and it must survive.

Every RTL file has mutants; they cover rounding modes, comparisons, off-by-one shifts,
handshakes, flushing, register decode and the atomic configuration. The rounding datapath
has one per boundary (carries, ties, sticky bits, saturation and exponent edges,
subnormals): each is killed by stimuli built to reach that boundary (boundaries.py), not
by random values, which hit most of them with a probability near 2^-25.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    mutated: str
    first: str = ""  # comma-separated build-name keys to run first
    equivalent: str = ""  # why no test can tell it apart (empty: it must be killed)

    def check(self, rtl_dir: Path) -> str:
        """The file's text; ValueError unless the original text occurs exactly once."""
        text = (rtl_dir / self.file).read_text()
        if text.count(self.original) != 1:
            raise ValueError(f"mutant '{self.name}': its original text is not found exactly once in {self.file}")
        return text

    def apply(self, rtl_dir: Path) -> None:
        """Write the mutation into the copy of the RTL at rtl_dir."""
        text = self.check(rtl_dir)
        (rtl_dir / self.file).write_text(text.replace(self.original, self.mutated))


Q, D, P, U = "quantizer_fp32", "dequantizer_fp32", "packer_w32", "unpacker_w32"
TOP, TOP2 = "top_w32", "top_w16_x2_fifo8"

MUTANTS = (
    # ---- mpconv_fp32_decode.v
    Mutant("decode: subnormal exponent off by one", "mpconv_fp32_decode.v",
           "(10'd0 - 10'd126 - {5'd0, lz})", "(10'd0 - 10'd127 - {5'd0, lz})", Q),
    Mutant("decode: Inf read as NaN", "mpconv_fp32_decode.v",
           "assign is_nan  = (ef == 8'hff) && (fr != 23'd0);", "assign is_nan  = (ef == 8'hff);", Q),
    Mutant("decode: a subnormal keeps a hidden bit", "mpconv_fp32_decode.v",
           "wire [23:0] raw = {ef != 8'd0, fr};", "wire [23:0] raw = {1'b1, fr};", Q),
    # ---- mpconv_quantizer.v
    Mutant("quantizer: fp32 product rounded half-down at exact midpoints", "mpconv_quantizer.v",
           "{24'd0, p_g & (p_st | p_m[0])}", "{24'd0, p_g & p_st}", Q),
    Mutant("quantizer: fp32 product rounded half-up (away) at exact midpoints", "mpconv_quantizer.v",
           "{24'd0, p_g & (p_st | p_m[0])}", "{24'd0, p_g}", Q),
    Mutant("quantizer: integer ties rounded away from zero", "mpconv_quantizer.v",
           "wire rnd_int = half & (sticky | int_part[0]);", "wire rnd_int = half;", Q),
    Mutant("quantizer: integer ties rounded toward zero", "mpconv_quantizer.v",
           "wire rnd_int = half & (sticky | int_part[0]);", "wire rnd_int = half & sticky;", Q),
    Mutant("quantizer: saturation removed (values wrap)", "mpconv_quantizer.v",
           "wire        over    = s4_sat | (s4_mag > lim);", "wire        over    = s4_sat;", Q),
    Mutant("quantizer: saturation compares >= instead of >", "mpconv_quantizer.v",
           "wire        over    = s4_sat | (s4_mag > lim);", "wire        over    = s4_sat | (s4_mag >= lim);", Q,
           equivalent="when mag == lim the clamp replaces lim by lim: the code is the same"),
    Mutant("quantizer: |p| < 0.5 threshold off by one (products in [0.5, 1) become 0)", "mpconv_quantizer.v",
           "(p_e <= 11'h7fe)", "(p_e <= 11'h7ff)", Q),
    Mutant("quantizer: integer alignment shift off by one", "mpconv_quantizer.v",
           "5'd15 - p_e[4:0]", "5'd16 - p_e[4:0]", Q),
    Mutant("quantizer: saturation threshold 2^15 instead of 2^16", "mpconv_quantizer.v",
           "(p_e >= 11'd16)", "(p_e >= 11'd15)", Q),
    Mutant("quantizer: narrow_range ignored", "mpconv_quantizer.v",
           "(cfg_narrow ? ones_b1 : pow_b1)", "(cfg_narrow ? pow_b1 : pow_b1)", Q),
    # the rounding datapath's boundaries: carries, sticky bits, tie rules, saturation edges
    Mutant("quantizer: fp32 product rounding carry not added to the exponent", "mpconv_quantizer.v",
           "s2_e + {10'd0, s2_p[47]} + {10'd0, p_r[24]};", "s2_e + {10'd0, s2_p[47]};", Q),
    Mutant("quantizer: fp32 product rounding carry not renormalized (significand wraps to 0)", "mpconv_quantizer.v",
           "p_r[24] ? p_r[24:1] : p_r[23:0];", "p_r[23:0];", Q),
    Mutant("quantizer: exponent of a 48-bit significand product not incremented", "mpconv_quantizer.v",
           "s2_e + {10'd0, s2_p[47]} + {10'd0, p_r[24]};", "s2_e + {10'd0, p_r[24]};", Q),
    Mutant("quantizer: fp32 product rounding ignores the sticky bits", "mpconv_quantizer.v",
           "{24'd0, p_g & (p_st | p_m[0])}", "{24'd0, p_g & p_m[0]}", Q),
    Mutant("quantizer: fp32 product sticky bit misses the product's last bit", "mpconv_quantizer.v",
           "(|s2_p[22:0]) : (|s2_p[21:0])", "(|s2_p[22:1]) : (|s2_p[21:1])", Q),
    Mutant("quantizer: fp32 product ties rounded to odd", "mpconv_quantizer.v",
           "{24'd0, p_g & (p_st | p_m[0])}", "{24'd0, p_g & (p_st | ~p_m[0])}", Q),
    Mutant("quantizer: integer rounding ignores the sticky bits", "mpconv_quantizer.v",
           "wire rnd_int = half & (sticky | int_part[0]);", "wire rnd_int = half & int_part[0];", Q),
    Mutant("quantizer: integer sticky bit misses the last fraction bit", "mpconv_quantizer.v",
           "wire        sticky   = |ext[22:0];", "wire        sticky   = |ext[22:1];", Q),
    Mutant("quantizer: integer ties rounded to odd", "mpconv_quantizer.v",
           "wire rnd_int = half & (sticky | int_part[0]);", "wire rnd_int = half & (sticky | ~int_part[0]);", Q),
    Mutant("quantizer: saturation lets max_bound + 1 and min_bound - 1 through", "mpconv_quantizer.v",
           "wire        over    = s4_sat | (s4_mag > lim);", "wire        over    = s4_sat | (s4_mag > lim + 17'd1);",
           Q),
    Mutant("quantizer: saturation threshold 2^17 instead of 2^16", "mpconv_quantizer.v",
           "(p_e >= 11'd16)", "(p_e >= 11'd17)", Q),
    # ---- mpconv_dequantizer.v
    Mutant("dequantizer: subnormal result shifts swapped (1 <-> 2)", "mpconv_dequantizer.v",
           "eb[9] ? 2'd2 : 2'd1", "eb[9] ? 2'd1 : 2'd2", D),
    Mutant("dequantizer: quotient ties rounded away from zero", "mpconv_dequantizer.v",
           "{30'd0, f_g & (f_st | f_m[0])}", "{30'd0, f_g}", D,
           equivalent="q / scale is never exactly halfway between two floats: it is exact only when the odd "
                      "part of the scale divides q, and then it has at most 16 significant bits (24 fit); a "
                      "subnormal result needs |q| <= 3, at most 2 significant bits"),
    Mutant("dequantizer: quotient truncated instead of rounded", "mpconv_dequantizer.v",
           "{30'd0, f_g & (f_st | f_m[0])}", "{30'd0, 1'b0}", D),
    Mutant("dequantizer: remainder left out of the sticky bit", "mpconv_dequantizer.v",
           "Q[25] ? (Q[0] | rem_nz) : rem_nz", "Q[25] ? Q[0] : 1'b0", D),
    Mutant("dequantizer: unsigned codes read as signed", "mpconv_dequantizer.v",
           "neg   = cfg_signed && ((c & sbit) != 16'd0)", "neg   = ((c & sbit) != 16'd0)", D),
    Mutant("dequantizer: overflow threshold off by one", "mpconv_dequantizer.v",
           "(eb >= 10'd255)", "(eb > 10'd255)", D),
    Mutant("dequantizer: scale -0.0 keeps its sign", "mpconv_dequantizer.v",
           "wire        ss = sz ? 1'b0 : ss_raw;", "wire        ss = ss_raw;", D),
    Mutant("dequantizer: fp32 rounding carry not propagated into the exponent", "mpconv_dequantizer.v",
           "wire [30:0] f_mag  = {f_e, f_m} + {30'd0, f_g & (f_st | f_m[0])};",
           "wire [30:0] f_mag  = {f_e, f_m + {22'd0, f_g & (f_st | f_m[0])}};", D,
           equivalent="the fp32 rounding of q / scale never carries into the next binade (nor from the "
                      "largest subnormal into 2^-126): with |scale| = S 2^j (S < 2^24), landing within half an "
                      "ulp below 2^N needs 0 < S - q 2^-(j+N) <= S 2^-25 < 1/2, so j + N = c > 0 and "
                      "q >= S 2^c (1 - 2^-25) >= 2^24, beyond 16-bit codes (the subnormal carry likewise)"),
    Mutant("dequantizer: bfloat16 rounding carry not added to the exponent", "mpconv_dequantizer.v",
           "{f1_res[31], rnd[30:16]}", "{f1_res[31], f1_res[30:23], rnd[22:16]}", "dequantizer_bf16"),
    Mutant("dequantizer: bfloat16 ties rounded away from zero", "mpconv_dequantizer.v",
           "f1_res[30:0] + 31'h7fff + {30'd0, f1_res[16]};", "f1_res[30:0] + 31'h8000;", "dequantizer_bf16"),
    Mutant("dequantizer: overflow threshold one binade low (the largest binade overflows)", "mpconv_dequantizer.v",
           "(eb >= 10'd255)", "(eb >= 10'd254)", D),
    Mutant("dequantizer: the smallest normal binade taken for subnormal", "mpconv_dequantizer.v",
           "e_sub  = eb[9] || (eb == 10'd0);", "e_sub  = eb[9] || (eb <= 10'd1);", D),
    # ---- mpconv_packer.v
    Mutant("packer: a word is emitted one bit early", "mpconv_packer.v",
           "wire          full   = c2 >= W8;", "wire          full   = c2 >= W8 - 8'd1;", P),
    Mutant("packer: no flush of a last value that straddles two words", "mpconv_packer.v",
           "flush_pend <= s_axis_tlast && (c3 != 8'd0);", "flush_pend <= 1'b0;", P),
    Mutant("packer: tlast on the full word although a remainder follows", "mpconv_packer.v",
           "o_last <= s_axis_tlast && (c3 == 8'd0);", "o_last <= s_axis_tlast;", P),
    Mutant("packer: the lost cycle at a straddling tensor end is back", "mpconv_packer.v",
           "assign s_axis_tready = out_free;", "assign s_axis_tready = out_free && !flush_pend;", P),
    # ---- mpconv_unpacker.v
    Mutant("unpacker deadlock: a value ending exactly at the window's end is never emitted", "mpconv_unpacker.v",
           "(avail >= b8)", "(avail > b8)", TOP),
    Mutant("unpacker: an early word tlast is not flagged", "mpconv_unpacker.v",
           "frame_err <= lo_last;", "frame_err <= 1'b0;", TOP),
    Mutant("unpacker: a tlast before a straddling last value is not flagged", "mpconv_unpacker.v",
           " | (past & lo_last);", ";", TOP),
    Mutant("unpacker: a straddling last value drops one word instead of two", "mpconv_unpacker.v",
           "(past ? 2'd2 : 2'd1)", "(past ? 2'd1 : 2'd1)", U),
    # ---- mpconv_fifo.v
    Mutant("fifo: accepts a write when full", "mpconv_fifo.v",
           "assign s_ready = (count != FULL);", "assign s_ready = (count <= FULL);", TOP2),
    Mutant("fifo: reads over an output that is still held", "mpconv_fifo.v",
           "&& (!ovalid || m_ready);", ";", TOP),
    # ---- mpconv_skid.v
    Mutant("skid: the spare entry is never filled (a beat is lost)", "mpconv_skid.v",
           "sk_valid <= 1'b1;", "sk_valid <= 1'b0;", TOP),
    Mutant("skid: ready ignores the spare entry", "mpconv_skid.v",
           "assign s_ready = !sk_valid;", "assign s_ready = 1'b1;", TOP),
    Mutant("skid: the spare entry is dropped when the output frees", "mpconv_skid.v",
           "o_valid <= sk_valid || s_valid;", "o_valid <= s_valid;", TOP),
    # ---- mpconv_regs.v
    Mutant("regs: byte strobes ignored", "mpconv_regs.v",
           "strb[i] ? wd[i*8 +: 8] : old[i*8 +: 8]", "wd[i*8 +: 8]", TOP),
    Mutant("regs: not atomic (a SCALE write reaches the lanes at once)", "mpconv_regs.v",
           "6'h03: begin sh_scale <= new_scale; sh_written <= 1'b1; end",
           "6'h03: begin sh_scale <= new_scale; cfg_scale <= new_scale; cfg_commit <= 1'b1; sh_written <= 1'b1; end",
           TOP),
    Mutant("regs: COMMIT accepts signed 1-bit", "mpconv_regs.v",
           "wire commit_ok = !(sh_signed && sh_bits == 5'd1);", "wire commit_ok = 1'b1;", TOP),
    Mutant("regs: SCALE decoded at the wrong address", "mpconv_regs.v",
           "6'h03: begin sh_scale", "6'h13: begin sh_scale", TOP),
    Mutant("regs: frame_err cleared by the wrong STATUS bit", "mpconv_regs.v",
           "if (s_axil_wdata[2] && !frame_err) st_frame_err <= 1'b0;",
           "if (s_axil_wdata[1] && !frame_err) st_frame_err <= 1'b0;", TOP),
    Mutant("regs: output stall counter counts words", "mpconv_regs.v",
           "c_q_out_st + popcount(ev_q_out_stall)", "c_q_out_st + popcount(ev_q_out)", TOP),
    # ---- mpconv_lane.v
    Mutant("lane: quantize configuration switched before the old tensor drained", "mpconv_lane.v",
           "if (q_gate && !qz_busy && pk_idle) begin", "if (q_gate) begin", TOP),
    Mutant("lane: dequantize configuration switched inside a tensor", "mpconv_lane.v",
           "if (d_take) d_start <= s_din_tlast;", "if (d_take) d_start <= 1'b1;", TOP),
    Mutant("lane: nan_seen never raised", "mpconv_lane.v",
           "assign nan_seen = qz_valid && pk_ready && qz_nan;", "assign nan_seen = 1'b0;", TOP),
    # ---- mpconv_top.v
    Mutant("top: every lane takes lane 0's input tlast", "mpconv_top.v",
           ".s_qin_tlast(s_axis_qin_tlast[l])", ".s_qin_tlast(s_axis_qin_tlast[0])", TOP2),
    Mutant("top: input stall counter counts every valid cycle", "mpconv_top.v",
           ".ev_q_in_stall(s_axis_qin_tvalid & ~s_axis_qin_tready)", ".ev_q_in_stall(s_axis_qin_tvalid)", TOP),
)

# What the default test suite must catch on every run (tests/hw/test_sim_checks.py).
REQUIRED = ("quantizer: fp32 product rounded half-down at exact midpoints",
            "unpacker deadlock: a value ending exactly at the window's end is never emitted")


def by_name(name: str) -> Mutant:
    for m in MUTANTS:
        if m.name == name:
            return m
    raise KeyError(f"no mutant named {name!r}")
