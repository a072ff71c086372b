// Unpacker: dense LSB-first bitstream in WORD_W-bit words -> b-bit codes.
//
// The inverse of mpconv_packer. A tensor is cfg_count values: the last one leaves with
// tlast and the rest of its word (padding) is dropped; the next tensor starts on a word
// boundary. Framing comes from cfg_count alone; a word tlast that disagrees with it
// (missing on the tensor's last word, or on a word before it) pulses frame_err.
//
// Two-word window {hi, lo} and a bit pointer p into lo: a value (b <= 16 <= WORD_W bits)
// lies in the window at [p, p+b). Consuming past lo shifts the window by one word; a free
// word slot is refilled from the input in the same cycle. One value per cycle.
// cfg_* must stay constant while a tensor is open (mpconv_lane guarantees it).
`default_nettype none
module mpconv_unpacker #(
    parameter WORD_W = 32
) (
    input  wire              clk,
    input  wire              rst,    // synchronous, active high
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
    localparam integer WORD_I = WORD_W;
    localparam [7:0] W8 = WORD_I[7:0];
    localparam PW = (WORD_W <= 16) ? 4 : ((WORD_W <= 32) ? 5 : 6);   // bits of a pointer < WORD_W

    reg [WORD_W-1:0] lo, hi;
    reg              lo_last, hi_last;   // tlast of the word in each slot
    reg [1:0]        nw;                 // words in the window
    reg [7:0]        p;                  // next bit of lo, < WORD_W
    reg [31:0]       vcount;             // values emitted in the open tensor
    reg              o_valid, o_last;
    reg [15:0]       o_data;

    wire [7:0]  b8    = {3'd0, cfg_bits};
    wire [16:0] pow_b = 17'd1 << cfg_bits;
    wire unused_pow = &{1'b0, pow_b[16]};

    wire [7:0] held  = (nw == 2'd2) ? {W8[6:0], 1'b0} : ((nw == 2'd1) ? W8 : 8'd0);
    wire [7:0] avail = held - p;
    wire out_free = !o_valid || m_axis_tready;
    wire emit  = out_free && (nw != 2'd0) && (avail >= b8);
    wire tail  = (vcount + 32'd1 == cfg_count);          // the emitted value closes the tensor
    wire [7:0] p_sum = p + b8;
    wire to_end = p_sum >= W8;                            // the value reaches the end of lo
    wire past  = p_sum > W8;                             // ... and continues into hi

    // words leaving the window this cycle
    wire [1:0] drop = !emit ? 2'd0 : (tail ? (past ? 2'd2 : 2'd1) : (to_end ? 2'd1 : 2'd0));
    wire [1:0] nw_after = nw - drop;
    assign s_axis_tready = (nw_after != 2'd2);
    wire load = s_axis_tvalid && s_axis_tready;

    wire [2*WORD_W-1:0] win = {hi, lo};
    wire [2*WORD_W-1:0] win_sh = win >> p[PW-1:0];   // p < WORD_W: a narrow shift amount
    wire unused_win = &{1'b0, win_sh[2*WORD_W-1:16]};

    assign at_start = (nw == 2'd0) && (vcount == 32'd0);

    always @(posedge clk) begin
        if (rst) begin
            nw <= 2'd0;
            p <= 8'd0;
            vcount <= 32'd0;
            lo_last <= 1'b0;
            hi_last <= 1'b0;
            o_valid <= 1'b0;
            o_last <= 1'b0;
            o_data <= 16'd0;
            frame_err <= 1'b0;
        end else begin
            if (out_free) o_valid <= 1'b0;
            frame_err <= 1'b0;
            if (emit) begin
                o_valid <= 1'b1;
                o_data <= win_sh[15:0] & (pow_b[15:0] - 16'd1);
                o_last <= tail;
                vcount <= tail ? 32'd0 : vcount + 32'd1;
                p <= tail ? 8'd0 : (to_end ? p_sum - W8 : p_sum);
                if (tail)
                    frame_err <= (past ? !hi_last : !lo_last) | (past & lo_last);
                else if (to_end)
                    frame_err <= lo_last;
            end
            // shift out dropped words, then fill the first free slot
            if (drop == 2'd1) begin
                lo <= hi;
                lo_last <= hi_last;
            end
            if (load) begin
                if (nw_after == 2'd0) begin
                    lo <= s_axis_tdata;
                    lo_last <= s_axis_tlast;
                end else begin
                    hi <= s_axis_tdata;
                    hi_last <= s_axis_tlast;
                end
            end
            nw <= nw_after + {1'b0, load};
        end
    end

    assign m_axis_tvalid = o_valid;
    assign m_axis_tdata  = o_data;
    assign m_axis_tlast  = o_last;
endmodule
`default_nettype wire
