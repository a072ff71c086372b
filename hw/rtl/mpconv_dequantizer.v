// Dequantizer: b-bit integer code in, float out.
//
// out = fp32(q / scale), the correctly rounded IEEE-754 binary32 quotient (nearest even,
// subnormal results included), bit-exact with numpy/torch float32 division.
//   q is the code read as two's complement (cfg_signed) or unsigned, b = cfg_bits.
//   scale = +-0 divides by 1.0 instead: pytorch-quantization's rule for amax <= 2^-24
//   (it quantizes with scale 0, so every code is 0, then dequantizes with scale 1).
//   scale NaN -> 0x7fc00000; scale +-Inf -> signed zero; q = 0 -> zero signed like scale.
// FLOAT_W = 16 rounds the fp32 quotient to bfloat16 (nearest even), as torch's
// (q / scale).to(torch.bfloat16) does.
// The significand quotient comes from a pipelined non-restoring divider, two quotient
// bits per stage. Pipeline: 17 stages, one value per cycle, stalls as a whole.
// cfg_scale_dec is the scale decoded by mpconv_fp32_decode, packed as
// {is_nan, is_inf, is_zero, sign, exp[9:0], mant[23:0]} (one decoder serves all lanes).
// cfg_* must stay constant while busy (mpconv_lane guarantees it).
`default_nettype none
module mpconv_dequantizer #(
    parameter FLOAT_W = 32
) (
    input  wire               clk,
    input  wire               rst,    // synchronous, active high
    input  wire [4:0]         cfg_bits,
    input  wire               cfg_signed,
    input  wire [37:0]        cfg_scale_dec,
    input  wire [15:0]        s_axis_tdata,
    input  wire               s_axis_tvalid,
    output wire               s_axis_tready,
    input  wire               s_axis_tlast,
    output wire [FLOAT_W-1:0] m_axis_tdata,
    output wire               m_axis_tvalid,
    input  wire               m_axis_tready,
    output wire               m_axis_tlast,
    output wire               busy
);
    localparam NSTAGE = 13;          // divider stages, 2 quotient bits each
    localparam NV     = NSTAGE + 4;  // sign + normalize + divider + round + output

    reg  [NV-1:0] v;
    wire en = !v[NV-1] || m_axis_tready;
    assign s_axis_tready = en;
    assign busy = |v;

    always @(posedge clk) begin
        if (rst) v <= {NV{1'b0}};
        else if (en) v <= {v[NV-2:0], s_axis_tvalid};
    end

    // ---- scale (configuration, constant while busy)
    wire        sn = cfg_scale_dec[37], si = cfg_scale_dec[36], sz = cfg_scale_dec[35];
    wire        ss_raw = cfg_scale_dec[34];
    wire [9:0]  se_raw = cfg_scale_dec[33:24];
    wire [23:0] sm_raw = cfg_scale_dec[23:0];
    wire        ss = sz ? 1'b0 : ss_raw;
    wire [9:0]  se = sz ? 10'd0 : se_raw;
    wire [23:0] D  = sz ? 24'h800000 : sm_raw;   // divisor significand, D[23] = 1

    // ---- stage 0: code -> sign and magnitude
    // mask = 2^b - 1 and sbit = 2^(b-1), one LUT per bit (no shifter, no carry chain)
    reg  [15:0] mask, sbit;
    integer j;
    always @* begin
        for (j = 0; j < 16; j = j + 1) begin
            mask[j] = (cfg_bits > j[4:0]);
            sbit[j] = (cfg_bits == j[4:0] + 5'd1);
        end
    end
    wire [15:0] c     = s_axis_tdata & mask;
    wire        neg   = cfg_signed && ((c & sbit) != 16'd0);
    wire [15:0] qmag  = neg ? ((~c + 16'd1) & mask) : c;   // |q| <= 65535

    reg        z_last, z_sign;
    reg [15:0] z_mag;
    always @(posedge clk) begin
        if (en) begin
            z_last <= s_axis_tlast;
            z_sign <= neg ^ ss;
            z_mag  <= qmag;
        end
    end

    // ---- stage 1: normalized significand and exponent
    reg  [3:0]  qlz;
    integer i;
    always @* begin
        qlz = 4'd0;
        for (i = 0; i < 16; i = i + 1)
            if (z_mag[i]) qlz = 4'd15 - i[3:0];
    end
    wire [15:0] qn = z_mag << qlz;

    reg        d0_last, d0_sign, d0_nan, d0_zero;
    reg [23:0] d0_n;
    reg [9:0]  d0_e;
    always @(posedge clk) begin
        if (en) begin
            d0_last <= z_last;
            d0_sign <= z_sign;
            d0_nan  <= sn;
            d0_zero <= !sn && (si || z_mag == 16'd0);
            d0_n    <= {qn, 8'd0};
            d0_e    <= {6'd0, 4'd15 - qlz} - se;   // exponent of q minus exponent of scale
        end
    end

    // ---- divider: r stays in [-D, D); quotient bit = (r >= 0) after each step
    // Remainders r lie in [-D, D) with D < 2^24, so 25-bit two's complement holds them and
    // 2r +- D can be computed modulo 2^25. Step: 2r + D when r < 0, else 2r - D = 2r + ~D + 1;
    // the +1 rides in as an extra low bit so the step is one two-operand adder (one LUT per
    // bit on a carry chain).
    function [24:0] nr_step;
        input [24:0] r;
        input [23:0] d;
        /* verilator lint_off UNUSEDSIGNAL */
        reg   [25:0] t;   // t[0] is the carry-in slot, never read
        /* verilator lint_on UNUSEDSIGNAL */
        begin
            t = {r[23:0], 1'b0, 1'b1} + {({1'b0, d} ^ {25{~r[24]}}), ~r[24]};
            nr_step = t[25:1];
        end
    endfunction

    // Stage k of each flat vector below is the slice [k*width +: width].
    reg  [25*NSTAGE-1:0] dr;    // partial remainders
    reg  [26*NSTAGE-1:0] dq;    // quotient bits so far
    reg  [10*NSTAGE-1:0] de;    // exponent, sign, NaN, zero, tlast ride along
    reg  [NSTAGE-1:0]    dsg, dnan, dz, dl;
    wire [25*NSTAGE-1:0] dr_next;
    wire [26*NSTAGE-1:0] dq_next;
    wire unused_dq = &{1'b0, dq};   // the top two bits of each stage but the last stay 0

    wire [24:0] r_init = {1'b0, d0_n} - {1'b0, D};
    wire [24:0] r_one  = nr_step(r_init, D);
    assign dr_next[24:0] = r_one;
    assign dq_next[25:0] = {24'd0, ~r_init[24], ~r_one[24]};

    genvar k;
    generate
        for (k = 1; k < NSTAGE; k = k + 1) begin : g_div
            wire [24:0] ra = nr_step(dr[(k-1)*25 +: 25], D);
            wire [24:0] rb = nr_step(ra, D);
            assign dr_next[k*25 +: 25] = rb;
            assign dq_next[k*26 +: 26] = {dq[(k-1)*26 +: 24], ~ra[24], ~rb[24]};
        end
    endgenerate

    always @(posedge clk) begin
        if (en) begin
            dr   <= dr_next;
            dq   <= dq_next;
            de   <= {de[10*(NSTAGE-1)-1:0], d0_e};
            dsg  <= {dsg[NSTAGE-2:0], d0_sign};
            dnan <= {dnan[NSTAGE-2:0], d0_nan};
            dz   <= {dz[NSTAGE-2:0], d0_zero};
            dl   <= {dl[NSTAGE-2:0], d0_last};
        end
    end

    // ---- round the quotient to binary32
    wire [24:0] rf  = dr[25*NSTAGE-1 -: 25];
    wire [25:0] Q   = dq[26*NSTAGE-1 -: 26];                        // floor(N * 2^25 / D)
    wire [24:0] rpd = rf + {1'b0, D};
    wire        rem_nz = (rf != 25'd0) && (rpd != 25'd0);  // exact remainder nonzero
    wire [23:0] m   = Q[25] ? Q[25:2] : Q[24:1];
    wire        g   = Q[25] ? Q[1] : Q[0];
    wire        st  = Q[25] ? (Q[0] | rem_nz) : rem_nz;
    wire [9:0]  eb  = de[10*NSTAGE-1 -: 10] + 10'd127 - {9'd0, ~Q[25]};   // biased exponent, >= -1
    wire        e_over = !eb[9] && (eb >= 10'd255);
    wire        e_sub  = eb[9] || (eb == 10'd0);            // subnormal: eb is 0 or -1
    // Subnormal: shift right by 1 - eb (1 or 2), keeping the lost bits in the sticky bit.
    wire [1:0]  sub_sh = eb[9] ? 2'd2 : 2'd1;
    wire [26:0] sub_x  = {m, g, 2'b00} >> sub_sh;
    wire unused_sub = &{1'b0, sub_x[26]};   // always 0: m < 2^24 shifted right
    wire [22:0] f_m    = e_sub ? sub_x[25:3] : m[22:0];
    wire [7:0]  f_e    = e_sub ? 8'd0 : eb[7:0];
    wire        f_g    = e_sub ? sub_x[2] : g;
    wire        f_st   = e_sub ? (st | sub_x[1] | sub_x[0]) : st;
    wire [30:0] f_mag  = {f_e, f_m} + {30'd0, f_g & (f_st | f_m[0])};

    reg        f1_last;
    reg [31:0] f1_res;
    always @(posedge clk) begin
        if (en) begin
            f1_last <= dl[NSTAGE-1];
            if (dnan[NSTAGE-1])
                f1_res <= 32'h7fc00000;
            else if (dz[NSTAGE-1])
                f1_res <= {dsg[NSTAGE-1], 31'd0};
            else if (e_over)
                f1_res <= {dsg[NSTAGE-1], 31'h7f800000};
            else
                f1_res <= {dsg[NSTAGE-1], f_mag};
        end
    end

    // ---- output (bfloat16 build: round the fp32 result to nearest even)
    reg               f2_last;
    reg [FLOAT_W-1:0] f2_res;
    generate
        if (FLOAT_W == 16) begin : g_bf16
            wire        is_nan = (f1_res[30:23] == 8'hff) && (f1_res[22:0] != 23'd0);
            wire [30:0] rnd    = f1_res[30:0] + 31'h7fff + {30'd0, f1_res[16]};
            wire unused_rnd = &{1'b0, rnd[15:0]};
            always @(posedge clk) if (en) f2_res <= is_nan ? 16'h7fc0 : {f1_res[31], rnd[30:16]};
        end else begin : g_fp32
            always @(posedge clk) if (en) f2_res <= f1_res;
        end
    endgenerate
    always @(posedge clk) if (en) f2_last <= f1_last;

    assign m_axis_tvalid = v[NV-1];
    assign m_axis_tdata  = f2_res;
    assign m_axis_tlast  = f2_last;
endmodule
`default_nettype wire
