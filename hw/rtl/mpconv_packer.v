// Packer: b-bit codes -> dense LSB-first bitstream in WORD_W-bit words.
//
// Value i of a tensor occupies bits [i*b, i*b+b) of the stream; values may straddle
// words. The input tlast closes the tensor: the last, partial word is zero-padded and
// leaves with tlast, so a tensor of n values is exactly ceil(n*b/WORD_W) words.
// One value per cycle, across tensor boundaries too: when a tensor's last value leaves two
// words (it straddles), the second one leaves in the next cycle while the next tensor's
// first value is already accepted.
// cfg_bits must stay constant while !idle (mpconv_lane guarantees it).
`default_nettype none
module mpconv_packer #(
    parameter WORD_W = 32
) (
    input  wire              clk,
    input  wire              rst,    // synchronous, active high
    input  wire [4:0]        cfg_bits,
    input  wire [15:0]       s_axis_tdata,
    input  wire              s_axis_tvalid,
    output wire              s_axis_tready,
    input  wire              s_axis_tlast,
    output wire [WORD_W-1:0] m_axis_tdata,
    output wire              m_axis_tvalid,
    input  wire              m_axis_tready,
    output wire              m_axis_tlast,
    output wire              idle             // no bits of an open tensor held
);
    localparam AW = WORD_W + 16;   // up to WORD_W-1 held bits plus one 16-bit value
    localparam integer WORD_I = WORD_W;
    localparam [7:0] W8 = WORD_I[7:0];

    reg [AW-1:0]     acc;          // held bits, LSB first; bits >= cnt are zero
    reg [7:0]        cnt;
    reg              flush_pend;   // tlast left a remainder after a full word
    reg              o_valid, o_last;
    reg [WORD_W-1:0] o_data;

    wire out_free = !o_valid || m_axis_tready;
    assign s_axis_tready = out_free;
    assign idle = (cnt == 8'd0) && !flush_pend;
    wire take = s_axis_tvalid && s_axis_tready;

    wire [16:0] pow_b = 17'd1 << cfg_bits;
    wire unused_pow = &{1'b0, pow_b[16]};
    wire [15:0] val   = s_axis_tdata & (pow_b[15:0] - 16'd1);
    wire [AW-1:0] merged = acc | ({{(AW-16){1'b0}}, val} << cnt);
    wire [7:0]    c2     = cnt + {3'd0, cfg_bits};
    wire          full   = c2 >= W8;
    wire [AW-1:0] rest   = merged >> WORD_W;
    wire [7:0]    c3     = c2 - W8;

    always @(posedge clk) begin
        if (rst) begin
            acc <= {AW{1'b0}};
            cnt <= 8'd0;
            flush_pend <= 1'b0;
            o_valid <= 1'b0;
            o_last <= 1'b0;
            o_data <= {WORD_W{1'b0}};
        end else begin
            if (out_free) o_valid <= 1'b0;
            if (flush_pend && out_free) begin
                // the previous tensor's remainder word leaves; the next tensor starts afresh
                o_valid <= 1'b1;
                o_data <= acc[WORD_W-1:0];
                o_last <= 1'b1;
                acc <= take ? {{(AW-16){1'b0}}, val} : {AW{1'b0}};
                cnt <= take ? {3'd0, cfg_bits} : 8'd0;
                flush_pend <= take && s_axis_tlast;
            end else if (take) begin
                if (full) begin
                    o_valid <= 1'b1;
                    o_data <= merged[WORD_W-1:0];
                    o_last <= s_axis_tlast && (c3 == 8'd0);
                    acc <= rest;
                    cnt <= c3;
                    flush_pend <= s_axis_tlast && (c3 != 8'd0);
                end else if (s_axis_tlast) begin
                    o_valid <= 1'b1;
                    o_data <= merged[WORD_W-1:0];
                    o_last <= 1'b1;
                    acc <= {AW{1'b0}};
                    cnt <= 8'd0;
                end else begin
                    acc <= merged;
                    cnt <= c2;
                end
            end
        end
    end

    assign m_axis_tvalid = o_valid;
    assign m_axis_tdata  = o_data;
    assign m_axis_tlast  = o_last;
endmodule
`default_nettype wire
