// Unpacker: dense LSB-first bitstream in WORD_W-bit words -> b-bit codes.
//
// The inverse of mpconv_packer. A tensor is cfg_count values: the last one leaves with
// tlast and the rest of its word (padding) is dropped; the next tensor starts on a word
// boundary. Framing comes from cfg_count alone; a word tlast that disagrees with it
// (missing on the tensor's last word, or on a word before it) pulses frame_err.
// One value per cycle. cfg_* must stay constant while a tensor is open (mpconv_lane
// guarantees it).
`default_nettype none
module mpconv_unpacker #(
    parameter WORD_W = 32
) (
    input  wire              clk,
    input  wire              rst_n,
    input  wire [4:0]        cfg_bits,
    input  wire [31:0]       cfg_count,
    input  wire [WORD_W-1:0] s_axis_tdata,
    input  wire              s_axis_tvalid,
    output wire              s_axis_tready,
    input  wire              s_axis_tlast,
    output wire [15:0]       m_axis_tdata,
    output wire              m_axis_tvalid,
    input  wire              m_axis_tready,
    output wire              m_axis_tlast,
    output wire              at_start,        // between tensors, nothing held
    output reg               frame_err
);
    localparam AW = WORD_W + 16;
    localparam integer WORD_I = WORD_W;
    localparam [7:0] W8 = WORD_I[7:0];

    reg [AW-1:0] buf_q;       // bits not yet emitted, LSB first
    reg [7:0]    avail;
    reg [31:0]   vcount;      // values emitted in the open tensor
    reg          word_last;   // tlast of the most recently loaded word
    reg          o_valid, o_last;
    reg [15:0]   o_data;

    wire [7:0]  b8    = {3'd0, cfg_bits};
    wire [16:0] pow_b = 17'd1 << cfg_bits;
    wire unused_pow = &{1'b0, pow_b[16]};
    wire out_free = !o_valid || m_axis_tready;
    wire emit     = out_free && (avail >= b8);
    wire tail     = (vcount + 32'd1 == cfg_count);    // the emitted value closes the tensor
    wire [7:0]    avail_after = emit ? avail - b8 : avail;
    wire [AW-1:0] buf_after   = emit ? buf_q >> cfg_bits : buf_q;

    assign at_start = (vcount == 32'd0) && (avail == 8'd0);
    assign s_axis_tready = !(emit && tail) && (avail_after < b8);
    wire load = s_axis_tvalid && s_axis_tready;

    always @(posedge clk) begin
        if (!rst_n) begin
            buf_q <= {AW{1'b0}};
            avail <= 8'd0;
            vcount <= 32'd0;
            word_last <= 1'b0;
            o_valid <= 1'b0;
            o_last <= 1'b0;
            o_data <= 16'd0;
            frame_err <= 1'b0;
        end else begin
            frame_err <= 1'b0;
            if (out_free) o_valid <= 1'b0;
            if (emit) begin
                o_valid <= 1'b1;
                o_data <= buf_q[15:0] & (pow_b[15:0] - 16'd1);
                o_last <= tail;
            end
            if (emit && tail) begin
                buf_q <= {AW{1'b0}};
                avail <= 8'd0;
                vcount <= 32'd0;
                frame_err <= !word_last;
            end else begin
                if (emit) vcount <= vcount + 32'd1;
                if (load) begin
                    buf_q <= buf_after | ({{16{1'b0}}, s_axis_tdata} << avail_after);
                    avail <= avail_after + W8;
                    word_last <= s_axis_tlast;
                    if (word_last && !at_start) frame_err <= 1'b1;
                end else begin
                    buf_q <= buf_after;
                    avail <= avail_after;
                end
            end
        end
    end

    assign m_axis_tvalid = o_valid;
    assign m_axis_tdata  = o_data;
    assign m_axis_tlast  = o_last;
endmodule
`default_nettype wire
