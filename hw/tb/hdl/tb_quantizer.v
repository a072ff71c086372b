// Block-test wrapper: mpconv_quantizer with a raw fp32 scale port (decoded here, as
// mpconv_top does once for all lanes).
`default_nettype none
module tb_quantizer #(
    parameter FLOAT_W = 32
) (
    input  wire               clk,
    input  wire               rst,
    input  wire [4:0]         cfg_bits,
    input  wire               cfg_signed,
    input  wire               cfg_narrow,
    input  wire [31:0]        cfg_scale,
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
    wire        s, z, i, n;
    wire [9:0]  e;
    wire [23:0] m;
    mpconv_fp32_decode u_dec (.f(cfg_scale), .sign(s), .is_zero(z), .is_inf(i), .is_nan(n), .exp(e), .mant(m));
    mpconv_quantizer #(.FLOAT_W(FLOAT_W)) u_dut (
        .clk(clk), .rst(rst), .cfg_bits(cfg_bits), .cfg_signed(cfg_signed), .cfg_narrow(cfg_narrow),
        .cfg_scale_dec({n, i, z, s, e, m}),
        .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid), .s_axis_tready(s_axis_tready),
        .s_axis_tlast(s_axis_tlast), .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid),
        .m_axis_tready(m_axis_tready), .m_axis_tlast(m_axis_tlast), .m_axis_tuser(m_axis_tuser), .busy(busy));
endmodule
`default_nettype wire
