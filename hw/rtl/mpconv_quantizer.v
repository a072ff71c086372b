// Quantizer: float in, b-bit integer code out.
//
// code = clamp(rint_half_even(fp32(x * scale)), min_bound, max_bound), exactly as
// pytorch-quantization computes it in fp32: the product is rounded to nearest-even to
// binary32 first (double rounding is part of the specification), then to an integer
// with ties to even, then saturated.
//   signed:   max = 2^(b-1)-1, min = -2^(b-1) (or -(2^(b-1)-1) with narrow_range)
//   unsigned: max = 2^b-1, min = 0 (negative inputs saturate to 0)
//   NaN product (NaN operand, 0 * Inf): code 0 and m_axis_tuser = 1
//   +-Inf product: saturates to max / min
// FLOAT_W = 16 takes bfloat16 inputs, widened exactly to fp32 (scale stays fp32).
// The code leaves as its b-bit pattern (two's complement when signed), zero-extended.
// Pipeline: 5 stages, one value per cycle, stalls as a whole under back-pressure.
// cfg_scale_dec is the scale decoded by mpconv_fp32_decode, packed as
// {is_nan, is_inf, is_zero, sign, exp[9:0], mant[23:0]} (one decoder serves all lanes).
// cfg_* must stay constant while busy (mpconv_lane guarantees it).
`default_nettype none
module mpconv_quantizer #(
    parameter FLOAT_W = 32
) (
    input  wire               clk,
    input  wire               rst,    // synchronous, active high
    input  wire [4:0]         cfg_bits,
    input  wire               cfg_signed,
    input  wire               cfg_narrow,
    input  wire [37:0]        cfg_scale_dec,
    input  wire [FLOAT_W-1:0] s_axis_tdata,
    input  wire               s_axis_tvalid,
    output wire               s_axis_tready,
    input  wire               s_axis_tlast,
    output wire [15:0]        m_axis_tdata,
    output wire               m_axis_tvalid,
    input  wire               m_axis_tready,
    output wire               m_axis_tlast,
    output wire               m_axis_tuser,
    output wire               busy
);
    reg v1, v2, v3, v4, v5;
    wire en = !v5 || m_axis_tready;
    assign s_axis_tready = en;
    assign busy = v1 | v2 | v3 | v4 | v5;

    // ---- stage 1: decode both operands
    wire [31:0] x32;
    generate
        if (FLOAT_W == 16) begin : g_bf16
            assign x32 = {s_axis_tdata, 16'd0};
        end else begin : g_fp32
            assign x32 = s_axis_tdata;
        end
    endgenerate
    wire        xs, xz, xi, xn;
    wire [9:0]  xe;
    wire [23:0] xm;
    mpconv_fp32_decode u_dx (.f(x32), .sign(xs), .is_zero(xz), .is_inf(xi), .is_nan(xn), .exp(xe), .mant(xm));
    wire        sn = cfg_scale_dec[37], si = cfg_scale_dec[36], sz = cfg_scale_dec[35], ss = cfg_scale_dec[34];
    wire [9:0]  se = cfg_scale_dec[33:24];
    wire [23:0] sm = cfg_scale_dec[23:0];

    reg        s1_last, s1_sign, s1_zero, s1_inf, s1_nan;
    reg [23:0] s1_xm, s1_sm;
    reg [10:0] s1_e;
    always @(posedge clk) begin
        if (en) begin
            s1_last <= s_axis_tlast;
            s1_sign <= xs ^ ss;
            s1_nan  <= xn | sn | (xi & sz) | (xz & si);
            s1_inf  <= xi | si;
            s1_zero <= xz | sz;
            s1_xm   <= xm;
            s1_sm   <= sm;
            s1_e    <= {xe[9], xe} + {se[9], se};
        end
    end

    // ---- stage 2: significand product
    reg        s2_last, s2_sign, s2_zero, s2_inf, s2_nan;
    reg [47:0] s2_p;
    reg [10:0] s2_e;
    always @(posedge clk) begin
        if (en) begin
            s2_last <= s1_last;
            s2_sign <= s1_sign;
            s2_nan  <= s1_nan;
            s2_inf  <= s1_inf & ~s1_nan;
            s2_zero <= s1_zero & ~s1_nan & ~s1_inf;
            s2_p    <= s1_xm * s1_sm;
            s2_e    <= s1_e;
        end
    end

    // ---- stage 3: round the product to binary32 (nearest even), classify its magnitude
    wire [23:0] p_m  = s2_p[47] ? s2_p[47:24] : s2_p[46:23];
    wire        p_g  = s2_p[47] ? s2_p[23]    : s2_p[22];
    wire        p_st = s2_p[47] ? (|s2_p[22:0]) : (|s2_p[21:0]);
    wire [24:0] p_r  = {1'b0, p_m} + {24'd0, p_g & (p_st | p_m[0])};
    wire [10:0] p_e  = s2_e + {10'd0, s2_p[47]} + {10'd0, p_r[24]};
    wire [23:0] p_mr = p_r[24] ? p_r[24:1] : p_r[23:0];
    // |p| >= 2^16 saturates every width; |p| < 0.5 (also after rounding) gives 0.
    wire        p_big  = !p_e[10] && (p_e >= 11'd16);
    wire        p_tiny = p_e[10] && (p_e <= 11'h7fe);   // p_e <= -2

    reg        s3_last, s3_sign, s3_nan, s3_sat, s3_zero;
    reg [23:0] s3_m;
    reg [4:0]  s3_sh;
    always @(posedge clk) begin
        if (en) begin
            s3_last <= s2_last;
            s3_sign <= s2_sign;
            s3_nan  <= s2_nan;
            s3_sat  <= s2_inf | (!s2_nan && !s2_zero && p_big);
            s3_zero <= s2_nan | s2_zero | p_tiny;
            s3_m    <= p_mr;
            s3_sh   <= 5'd15 - p_e[4:0];   // 23 - p_e - 8: 0..16 when -1 <= p_e <= 15
        end
    end

    // ---- stage 4: round to an integer, ties to even
    // ext = s3_m * 2^(24 - (23 - p_e)): 16 integer bits above 24 fraction bits
    wire [39:0] ext      = {s3_m, 16'd0} >> s3_sh;
    wire [15:0] int_part = ext[39:24];
    wire        half     = ext[23];
    wire        sticky   = |ext[22:0];
    wire rnd_int = half & (sticky | int_part[0]);  // round half to even
    wire [16:0] mag      = {1'b0, int_part} + {16'd0, rnd_int};

    reg        s4_last, s4_sign, s4_nan, s4_sat;
    reg [16:0] s4_mag;
    always @(posedge clk) begin
        if (en) begin
            s4_last <= s3_last;
            s4_sign <= s3_sign;
            s4_nan  <= s3_nan;
            s4_sat  <= s3_sat;
            s4_mag  <= s3_zero ? 17'd0 : mag;
        end
    end

    // ---- stage 5: saturate, apply the sign, keep b bits
    // 2^b - 1, 2^(b-1) - 1 and 2^(b-1), decoded one LUT per bit (no shifter, no carry chain)
    reg  [16:0] ones_b, ones_b1, pow_b1;
    integer j;
    always @* begin
        for (j = 0; j < 17; j = j + 1) begin
            ones_b[j]  = (cfg_bits > j[4:0]);
            ones_b1[j] = (cfg_bits > j[4:0] + 5'd1);
            pow_b1[j]  = (cfg_bits == j[4:0] + 5'd1);
        end
    end
    wire [16:0] lim_pos = cfg_signed ? ones_b1 : ones_b;
    wire [16:0] lim_neg = !cfg_signed ? 17'd0 : (cfg_narrow ? ones_b1 : pow_b1);
    wire [16:0] lim     = s4_sign ? lim_neg : lim_pos;
    wire        over    = s4_sat | (s4_mag > lim);  // saturation
    wire [16:0] mag_c   = over ? lim : s4_mag;
    wire [16:0] code    = s4_sign ? (17'd0 - mag_c) : mag_c;
    wire [16:0] mask    = ones_b;
    wire unused_top = &{1'b0, code[16], mask[16]};

    reg        s5_last, s5_nan;
    reg [15:0] s5_code;
    always @(posedge clk) begin
        if (en) begin
            s5_last <= s4_last;
            s5_nan  <= s4_nan;
            s5_code <= code[15:0] & mask[15:0];
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            v1 <= 1'b0; v2 <= 1'b0; v3 <= 1'b0; v4 <= 1'b0; v5 <= 1'b0;
        end else if (en) begin
            v1 <= s_axis_tvalid; v2 <= v1; v3 <= v2; v4 <= v3; v5 <= v4;
        end
    end

    assign m_axis_tvalid = v5;
    assign m_axis_tdata  = s5_code;
    assign m_axis_tlast  = s5_last;
    assign m_axis_tuser  = s5_nan;
endmodule
`default_nettype wire
