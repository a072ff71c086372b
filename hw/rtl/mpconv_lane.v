// One converter lane: a quantize path and a dequantize path sharing the configuration.
//
//   quantize:   s_qin (floats)  -> quantizer -> packer -> FIFO -> m_qout (words)
//   dequantize: s_din (words)   -> FIFO -> unpacker -> dequantizer -> m_dout (floats)
//
//   every output stream leaves through a skid buffer (registered data, valid and ready)
//
// Each path keeps its own copy of the configuration and takes a new one only between
// tensors, at its input port: after a COMMIT (cfg_commit, the whole configuration at
// once), the first beat of the next tensor (the beat after a tlast) waits until the
// previous tensor has left the path's arithmetic (quantize: quantizer and packer;
// dequantize: FIFO, unpacker, dequantizer), then the path copies every field together.
// A tensor whose first beat was accepted before the commit keeps the old configuration.
`default_nettype none
module mpconv_lane #(
    parameter WORD_W     = 32,
    parameter FLOAT_W    = 32,
    parameter FIFO_DEPTH = 512
) (
    input  wire               clk,
    input  wire               rst,    // synchronous, active high
    input  wire [4:0]         cfg_bits,
    input  wire [37:0]        cfg_scale_dec,   // see mpconv_quantizer
    input  wire               cfg_signed,
    input  wire               cfg_narrow,
    input  wire [31:0]        cfg_count,
    input  wire               cfg_commit,     // one-cycle pulse: cfg_* now hold a new configuration
    // quantize path
    input  wire [FLOAT_W-1:0] s_qin_tdata,
    input  wire               s_qin_tvalid,
    output wire               s_qin_tready,
    input  wire               s_qin_tlast,
    output wire [WORD_W-1:0]  m_qout_tdata,
    output wire               m_qout_tvalid,
    input  wire               m_qout_tready,
    output wire               m_qout_tlast,
    // dequantize path
    input  wire [WORD_W-1:0]  s_din_tdata,
    input  wire               s_din_tvalid,
    output wire               s_din_tready,
    input  wire               s_din_tlast,
    output wire [FLOAT_W-1:0] m_dout_tdata,
    output wire               m_dout_tvalid,
    input  wire               m_dout_tready,
    output wire               m_dout_tlast,
    // status
    output wire               idle,
    output wire               cfg_pending,
    output wire               frame_err,
    output wire               nan_seen
);
    // ================= quantize path
    reg  [4:0]  q_bits;
    reg  [37:0] q_scale;
    reg         q_signed, q_narrow;
    reg         q_start;   // no value of a new tensor accepted yet
    reg         q_dirty;   // configuration written since this path last took it

    wire        qz_ready, qz_busy, qz_valid, qz_last, qz_nan;
    wire [15:0] qz_code;
    wire        pk_ready, pk_valid, pk_last, pk_idle;
    wire [WORD_W-1:0] pk_data;
    wire        qf_empty, qf_valid, qf_last, qs_ready, qs_empty;
    wire [WORD_W-1:0] qf_data;
    wire        pk_fifo_ready;

    wire q_gate = q_start && q_dirty;
    assign s_qin_tready = qz_ready && !q_gate;
    wire q_take = s_qin_tvalid && s_qin_tready;

    always @(posedge clk) begin
        if (rst) begin
            q_bits <= 5'd8; q_scale <= 38'h00_0080_0000; q_signed <= 1'b1; q_narrow <= 1'b0;
            q_start <= 1'b1;
            q_dirty <= 1'b1;
        end else begin
            if (q_take) q_start <= s_qin_tlast;
            if (q_gate && !qz_busy && pk_idle) begin
                q_bits <= cfg_bits; q_scale <= cfg_scale_dec; q_signed <= cfg_signed; q_narrow <= cfg_narrow;
                q_dirty <= 1'b0;
            end
            if (cfg_commit) q_dirty <= 1'b1;
        end
    end

    mpconv_quantizer #(.FLOAT_W(FLOAT_W)) u_quant (
        .clk(clk), .rst(rst),
        .cfg_bits(q_bits), .cfg_signed(q_signed), .cfg_narrow(q_narrow), .cfg_scale_dec(q_scale),
        .s_axis_tdata(s_qin_tdata), .s_axis_tvalid(s_qin_tvalid && !q_gate),
        .s_axis_tready(qz_ready), .s_axis_tlast(s_qin_tlast),
        .m_axis_tdata(qz_code), .m_axis_tvalid(qz_valid), .m_axis_tready(pk_ready),
        .m_axis_tlast(qz_last), .m_axis_tuser(qz_nan), .busy(qz_busy));

    mpconv_packer #(.WORD_W(WORD_W)) u_pack (
        .clk(clk), .rst(rst), .cfg_bits(q_bits),
        .s_axis_tdata(qz_code), .s_axis_tvalid(qz_valid), .s_axis_tready(pk_ready),
        .s_axis_tlast(qz_last),
        .m_axis_tdata(pk_data), .m_axis_tvalid(pk_valid), .m_axis_tready(pk_fifo_ready),
        .m_axis_tlast(pk_last), .idle(pk_idle));

    mpconv_fifo #(.WIDTH(WORD_W + 1), .DEPTH(FIFO_DEPTH)) u_qfifo (
        .clk(clk), .rst(rst),
        .s_data({pk_last, pk_data}), .s_valid(pk_valid), .s_ready(pk_fifo_ready),
        .m_data({qf_last, qf_data}), .m_valid(qf_valid), .m_ready(qs_ready),
        .empty(qf_empty));

    mpconv_skid #(.WIDTH(WORD_W + 1)) u_qskid (
        .clk(clk), .rst(rst),
        .s_data({qf_last, qf_data}), .s_valid(qf_valid), .s_ready(qs_ready),
        .m_data({m_qout_tlast, m_qout_tdata}), .m_valid(m_qout_tvalid), .m_ready(m_qout_tready),
        .empty(qs_empty));

    // ================= dequantize path
    reg  [4:0]  d_bits;
    reg  [37:0] d_scale;
    reg  [31:0] d_count;
    reg         d_signed;
    reg         d_start;   // no word of a new tensor accepted yet
    reg         d_dirty;

    wire [WORD_W-1:0] df_data;
    wire        df_valid, df_ready, df_last, df_empty;
    wire        up_valid, up_last, up_at_start;
    wire [15:0] up_code;
    wire        dq_ready, dq_busy, df_in_ready;
    wire        dq_valid, dq_last, ds_ready, ds_empty;
    wire [FLOAT_W-1:0] dq_data;

    wire d_gate = d_start && d_dirty;
    assign s_din_tready = df_in_ready && !d_gate;
    wire d_take = s_din_tvalid && s_din_tready;

    mpconv_fifo #(.WIDTH(WORD_W + 1), .DEPTH(FIFO_DEPTH)) u_dfifo (
        .clk(clk), .rst(rst),
        .s_data({s_din_tlast, s_din_tdata}), .s_valid(s_din_tvalid && !d_gate), .s_ready(df_in_ready),
        .m_data({df_last, df_data}), .m_valid(df_valid), .m_ready(df_ready),
        .empty(df_empty));

    mpconv_unpacker #(.WORD_W(WORD_W)) u_unpack (
        .clk(clk), .rst(rst), .cfg_bits(d_bits), .cfg_count(d_count),
        .s_axis_tdata(df_data), .s_axis_tvalid(df_valid), .s_axis_tready(df_ready),
        .s_axis_tlast(df_last),
        .m_axis_tdata(up_code), .m_axis_tvalid(up_valid), .m_axis_tready(dq_ready),
        .m_axis_tlast(up_last), .at_start(up_at_start), .frame_err(frame_err));

    always @(posedge clk) begin
        if (rst) begin
            d_bits <= 5'd8; d_scale <= 38'h00_0080_0000; d_count <= 32'd1; d_signed <= 1'b1;
            d_start <= 1'b1;
            d_dirty <= 1'b1;
        end else begin
            if (d_take) d_start <= s_din_tlast;
            if (d_gate && df_empty && up_at_start && !up_valid && !dq_busy) begin
                d_bits <= cfg_bits; d_scale <= cfg_scale_dec; d_count <= cfg_count; d_signed <= cfg_signed;
                d_dirty <= 1'b0;
            end
            if (cfg_commit) d_dirty <= 1'b1;
        end
    end

    mpconv_dequantizer #(.FLOAT_W(FLOAT_W)) u_dequant (
        .clk(clk), .rst(rst),
        .cfg_bits(d_bits), .cfg_signed(d_signed), .cfg_scale_dec(d_scale),
        .s_axis_tdata(up_code), .s_axis_tvalid(up_valid), .s_axis_tready(dq_ready),
        .s_axis_tlast(up_last),
        .m_axis_tdata(dq_data), .m_axis_tvalid(dq_valid), .m_axis_tready(ds_ready),
        .m_axis_tlast(dq_last), .busy(dq_busy));

    mpconv_skid #(.WIDTH(FLOAT_W + 1)) u_dskid (
        .clk(clk), .rst(rst),
        .s_data({dq_last, dq_data}), .s_valid(dq_valid), .s_ready(ds_ready),
        .m_data({m_dout_tlast, m_dout_tdata}), .m_valid(m_dout_tvalid), .m_ready(m_dout_tready),
        .empty(ds_empty));

    assign idle = !qz_busy && pk_idle && !pk_valid && qf_empty && qs_empty
               && df_empty && up_at_start && !up_valid && !dq_busy && ds_empty;
    assign cfg_pending = q_dirty || d_dirty;
    assign nan_seen = qz_valid && pk_ready && qz_nan;
endmodule
`default_nettype wire
