// mpconv_top: exact mixed-precision number converter.
//
// LANES independent lanes share one AXI4-Lite configuration. Lane i owns bits
// [i*FLOAT_W +: FLOAT_W] of the float buses, [i*WORD_W +: WORD_W] of the word buses and
// bit i of every tvalid/tready/tlast. Float side: fp32 (BF16 = 0) or bfloat16 (BF16 = 1).
// Clock and synchronous active-low reset (aresetn) are shared by all interfaces; the
// reset is registered once here (hold rst_n low for at least 2 clock cycles).
// See hw/README.md for the register map, data formats and latency.
`default_nettype none
module mpconv_top #(
    parameter LANES      = 1,
    parameter WORD_W     = 32,     // 16, 32 or 64
    parameter BF16       = 0,
    parameter FIFO_DEPTH = 512
) (
    input  wire                        clk,
    input  wire                        rst_n,
    // AXI4-Lite slave (configuration, status, counters)
    input  wire [7:0]                  s_axil_awaddr,
    input  wire                        s_axil_awvalid,
    output wire                        s_axil_awready,
    input  wire [31:0]                 s_axil_wdata,
    input  wire [3:0]                  s_axil_wstrb,
    input  wire                        s_axil_wvalid,
    output wire                        s_axil_wready,
    output wire [1:0]                  s_axil_bresp,
    output wire                        s_axil_bvalid,
    input  wire                        s_axil_bready,
    input  wire [7:0]                  s_axil_araddr,
    input  wire                        s_axil_arvalid,
    output wire                        s_axil_arready,
    output wire [31:0]                 s_axil_rdata,
    output wire [1:0]                  s_axil_rresp,
    output wire                        s_axil_rvalid,
    input  wire                        s_axil_rready,
    // quantize path: floats in, packed words out
    input  wire [LANES*FLOAT_W-1:0]    s_axis_qin_tdata,
    input  wire [LANES-1:0]            s_axis_qin_tvalid,
    output wire [LANES-1:0]            s_axis_qin_tready,
    input  wire [LANES-1:0]            s_axis_qin_tlast,
    output wire [LANES*WORD_W-1:0]     m_axis_qout_tdata,
    output wire [LANES-1:0]            m_axis_qout_tvalid,
    input  wire [LANES-1:0]            m_axis_qout_tready,
    output wire [LANES-1:0]            m_axis_qout_tlast,
    // dequantize path: packed words in, floats out
    input  wire [LANES*WORD_W-1:0]     s_axis_din_tdata,
    input  wire [LANES-1:0]            s_axis_din_tvalid,
    output wire [LANES-1:0]            s_axis_din_tready,
    input  wire [LANES-1:0]            s_axis_din_tlast,
    output wire [LANES*FLOAT_W-1:0]    m_axis_dout_tdata,
    output wire [LANES-1:0]            m_axis_dout_tvalid,
    input  wire [LANES-1:0]            m_axis_dout_tready,
    output wire [LANES-1:0]            m_axis_dout_tlast
);
    localparam FLOAT_W = (BF16 != 0) ? 16 : 32;

    // Registered, active-high copy of the reset: one flip-flop drives every synchronous
    // reset (an active-low reset would cost an inverter per flip-flop in synth_xilinx).
    reg rst;
    always @(posedge clk) rst <= !rst_n;

    wire [4:0]  cfg_bits;
    wire [31:0] cfg_scale, cfg_count;
    wire        cfg_signed, cfg_narrow, cfg_commit;
    wire [LANES-1:0] lane_idle, lane_pending, lane_frame_err, lane_nan;

    // The scale register decoded once for all lanes.
    wire        sc_sign, sc_zero, sc_inf, sc_nan;
    wire [9:0]  sc_exp;
    wire [23:0] sc_mant;
    mpconv_fp32_decode u_scale_dec (.f(cfg_scale), .sign(sc_sign), .is_zero(sc_zero), .is_inf(sc_inf),
                                    .is_nan(sc_nan), .exp(sc_exp), .mant(sc_mant));
    wire [37:0] cfg_scale_dec = {sc_nan, sc_inf, sc_zero, sc_sign, sc_exp, sc_mant};

    mpconv_regs #(.LANES(LANES), .WORD_W(WORD_W), .BF16(BF16), .FIFO_DEPTH(FIFO_DEPTH)) u_regs (
        .clk(clk), .rst(rst),
        .s_axil_awaddr(s_axil_awaddr), .s_axil_awvalid(s_axil_awvalid), .s_axil_awready(s_axil_awready),
        .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(s_axil_wstrb), .s_axil_wvalid(s_axil_wvalid),
        .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp), .s_axil_bvalid(s_axil_bvalid),
        .s_axil_bready(s_axil_bready), .s_axil_araddr(s_axil_araddr), .s_axil_arvalid(s_axil_arvalid),
        .s_axil_arready(s_axil_arready), .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp),
        .s_axil_rvalid(s_axil_rvalid), .s_axil_rready(s_axil_rready),
        .cfg_bits(cfg_bits), .cfg_scale(cfg_scale), .cfg_signed(cfg_signed), .cfg_narrow(cfg_narrow),
        .cfg_count(cfg_count), .cfg_commit(cfg_commit),
        .idle(&lane_idle), .cfg_pending(|lane_pending), .frame_err(|lane_frame_err), .nan_seen(|lane_nan),
        .ev_q_in(s_axis_qin_tvalid & s_axis_qin_tready),
        .ev_q_out(m_axis_qout_tvalid & m_axis_qout_tready),
        .ev_q_in_stall(s_axis_qin_tvalid & ~s_axis_qin_tready),
        .ev_q_out_stall(m_axis_qout_tvalid & ~m_axis_qout_tready),
        .ev_d_in(s_axis_din_tvalid & s_axis_din_tready),
        .ev_d_out(m_axis_dout_tvalid & m_axis_dout_tready),
        .ev_d_in_stall(s_axis_din_tvalid & ~s_axis_din_tready),
        .ev_d_out_stall(m_axis_dout_tvalid & ~m_axis_dout_tready));

    genvar l;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : g_lane
            mpconv_lane #(.WORD_W(WORD_W), .FLOAT_W(FLOAT_W), .FIFO_DEPTH(FIFO_DEPTH)) u_lane (
                .clk(clk), .rst(rst),
                .cfg_bits(cfg_bits), .cfg_scale_dec(cfg_scale_dec), .cfg_signed(cfg_signed),
                .cfg_narrow(cfg_narrow), .cfg_count(cfg_count), .cfg_commit(cfg_commit),
                .s_qin_tdata(s_axis_qin_tdata[l*FLOAT_W +: FLOAT_W]),
                .s_qin_tvalid(s_axis_qin_tvalid[l]), .s_qin_tready(s_axis_qin_tready[l]),
                .s_qin_tlast(s_axis_qin_tlast[l]),
                .m_qout_tdata(m_axis_qout_tdata[l*WORD_W +: WORD_W]),
                .m_qout_tvalid(m_axis_qout_tvalid[l]), .m_qout_tready(m_axis_qout_tready[l]),
                .m_qout_tlast(m_axis_qout_tlast[l]),
                .s_din_tdata(s_axis_din_tdata[l*WORD_W +: WORD_W]),
                .s_din_tvalid(s_axis_din_tvalid[l]), .s_din_tready(s_axis_din_tready[l]),
                .s_din_tlast(s_axis_din_tlast[l]),
                .m_dout_tdata(m_axis_dout_tdata[l*FLOAT_W +: FLOAT_W]),
                .m_dout_tvalid(m_axis_dout_tvalid[l]), .m_dout_tready(m_axis_dout_tready[l]),
                .m_dout_tlast(m_axis_dout_tlast[l]),
                .idle(lane_idle[l]), .cfg_pending(lane_pending[l]),
                .frame_err(lane_frame_err[l]), .nan_seen(lane_nan[l]));
        end
    endgenerate
endmodule
`default_nettype wire
