// Combinational IEEE-754 binary32 field decoder.
// Splits a float into class flags, sign, and a normalized 24-bit significand with its
// unbiased exponent, so that value = mant * 2^(exp - 23) for every finite nonzero input
// (subnormals are normalized with a leading-zero count, so mant[23] is always 1 then).
`default_nettype none
module mpconv_fp32_decode (
    input  wire [31:0] f,
    output wire        sign,
    output wire        is_zero,
    output wire        is_inf,
    output wire        is_nan,
    output wire [9:0]  exp,    // two's complement, range -149..127
    output wire [23:0] mant
);
    wire [7:0]  ef  = f[30:23];
    wire [22:0] fr  = f[22:0];
    wire [23:0] raw = {ef != 8'd0, fr};

    assign sign    = f[31];
    assign is_zero = (ef == 8'd0) && (fr == 23'd0);
    assign is_inf  = (ef == 8'hff) && (fr == 23'd0);
    assign is_nan  = (ef == 8'hff) && (fr != 23'd0);

    // Leading zeros of raw (only nonzero for subnormals).
    reg [4:0] lz;
    integer i;
    always @* begin
        lz = 5'd0;
        for (i = 0; i < 24; i = i + 1)
            if (raw[i]) lz = 5'd23 - i[4:0];
    end

    assign mant = raw << lz;
    assign exp  = (ef == 8'd0) ? (10'd0 - 10'd126 - {5'd0, lz}) : ({2'b00, ef} - 10'd127);
endmodule
`default_nettype wire
