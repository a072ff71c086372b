// AXI4-Lite register block: shared configuration, status and performance counters.
// Register map (byte addresses; see hw/README.md for the full description):
//   0x00 ID        RO  0x4d505143 ("MPQC")
//   0x04 PARAMS    RO  [7:0] LANES, [15:8] WORD_W, [16] BF16, [28:24] log2(FIFO_DEPTH)
//   0x08 BITS      RW  [4:0] bit width b, 1..16 (2..16 when signed); reset 8      (shadow)
//   0x0C SCALE     RW  fp32 scale; reset 1.0                                       (shadow)
//   0x10 MODE      RW  [0] signed (reset 1), [1] narrow_range (reset 0)            (shadow)
//   0x14 COUNT     RW  values per tensor on the dequantize path, >= 1; reset 1     (shadow)
//   0x18 STATUS    [0] idle RO, [1] cfg_err W1C, [2] frame_err W1C, [3] nan_seen W1C,
//                  [4] cfg_pending RO, [5] uncommitted RO
//   0x1C CONTROL   WO  [0] 1 = clear all counters
//   0x20 CYCLES, 0x24 Q_VALUES_IN, 0x28 Q_WORDS_OUT, 0x2C Q_IN_STALLS, 0x30 Q_OUT_STALLS,
//   0x34 D_WORDS_IN, 0x38 D_VALUES_OUT, 0x3C D_IN_STALLS, 0x40 D_OUT_STALLS   RO, summed over lanes
//   0x44 COMMIT    WO  [0] 1 = the shadow configuration becomes the configuration, at once
// Configuration writes go to shadow registers; the lanes only ever see the committed set,
// so a tensor never starts with part of an old and part of a new configuration. A write
// of an invalid field value (BITS outside 1..16, reserved MODE bits, COUNT = 0), and a
// COMMIT of an invalid combination (signed with BITS = 1), are refused with SLVERR and set
// cfg_err; an access to an unmapped or read-only address answers SLVERR.
`default_nettype none
module mpconv_regs #(
    parameter LANES      = 1,
    parameter WORD_W     = 32,
    parameter BF16       = 0,
    parameter FIFO_DEPTH = 512
) (
    input  wire             clk,
    input  wire             rst,    // synchronous, active high
    // AXI4-Lite slave
    input  wire [7:0]       s_axil_awaddr,
    input  wire             s_axil_awvalid,
    output wire             s_axil_awready,
    input  wire [31:0]      s_axil_wdata,
    input  wire [3:0]       s_axil_wstrb,
    input  wire             s_axil_wvalid,
    output wire             s_axil_wready,
    output reg  [1:0]       s_axil_bresp,
    output reg              s_axil_bvalid,
    input  wire             s_axil_bready,
    input  wire [7:0]       s_axil_araddr,
    input  wire             s_axil_arvalid,
    output wire             s_axil_arready,
    output reg  [31:0]      s_axil_rdata,
    output reg  [1:0]       s_axil_rresp,
    output reg              s_axil_rvalid,
    input  wire             s_axil_rready,
    // configuration
    output reg  [4:0]       cfg_bits,
    output reg  [31:0]      cfg_scale,
    output reg              cfg_signed,
    output reg              cfg_narrow,
    output reg  [31:0]      cfg_count,
    output reg              cfg_commit,     // one-cycle pulse: the committed configuration changed
    // status
    input  wire             idle,
    input  wire             cfg_pending,
    input  wire             frame_err,
    input  wire             nan_seen,
    // per-lane events, one bit per lane, counted every cycle
    input  wire [LANES-1:0] ev_q_in,
    input  wire [LANES-1:0] ev_q_out,
    input  wire [LANES-1:0] ev_q_in_stall,
    input  wire [LANES-1:0] ev_q_out_stall,
    input  wire [LANES-1:0] ev_d_in,
    input  wire [LANES-1:0] ev_d_out,
    input  wire [LANES-1:0] ev_d_in_stall,
    input  wire [LANES-1:0] ev_d_out_stall
);
    localparam [1:0] OKAY = 2'b00, SLVERR = 2'b10;

    function integer clog2;
        input integer n;
        integer r;
        begin
            r = 0;
            while ((1 << r) < n) r = r + 1;
            clog2 = r;
        end
    endfunction

    function [31:0] popcount;
        input [LANES-1:0] x;
        integer i;
        begin
            popcount = 32'd0;
            for (i = 0; i < LANES; i = i + 1)
                popcount = popcount + {31'd0, x[i]};
        end
    endfunction

    function [31:0] apply_strb;
        input [31:0] old;
        input [31:0] wd;
        input [3:0]  strb;
        integer i;
        begin
            for (i = 0; i < 4; i = i + 1)
                apply_strb[i*8 +: 8] = strb[i] ? wd[i*8 +: 8] : old[i*8 +: 8];
        end
    endfunction

    localparam [31:0] ID_VALUE = 32'h4d505143;
    localparam integer LANES_I = LANES;
    localparam integer WORD_I  = WORD_W;
    localparam [7:0]  P_LANES  = LANES_I[7:0];
    localparam [7:0]  P_WORD   = WORD_I[7:0];
    localparam integer DEPTH_LOG2 = clog2(FIFO_DEPTH);
    localparam [4:0]  P_DEPTH  = DEPTH_LOG2[4:0];
    localparam [31:0] PARAMS_VALUE = {3'd0, P_DEPTH, 7'd0, (BF16 != 0), P_WORD, P_LANES};

    reg st_cfg_err, st_frame_err, st_nan;
    // shadow configuration: what software wrote since the last COMMIT
    reg [4:0]  sh_bits;
    reg [31:0] sh_scale, sh_count;
    reg        sh_signed, sh_narrow, sh_written;
    reg [31:0] c_cycles, c_q_in, c_q_out, c_q_in_st, c_q_out_st, c_d_in, c_d_out, c_d_in_st, c_d_out_st;

    // ---------------- write channel: address and data are taken together
    wire wr_go = s_axil_awvalid && s_axil_wvalid && !s_axil_bvalid;
    assign s_axil_awready = wr_go;
    assign s_axil_wready  = wr_go;
    wire [5:0]  wa = s_axil_awaddr[7:2];
    wire unused_addr_lsbs = &{1'b0, s_axil_awaddr[1:0], s_axil_araddr[1:0]};
    wire [31:0] new_bits  = apply_strb({27'd0, sh_bits}, s_axil_wdata, s_axil_wstrb);
    wire [31:0] new_mode  = apply_strb({30'd0, sh_narrow, sh_signed}, s_axil_wdata, s_axil_wstrb);
    wire [31:0] new_scale = apply_strb(sh_scale, s_axil_wdata, s_axil_wstrb);
    wire [31:0] new_count = apply_strb(sh_count, s_axil_wdata, s_axil_wstrb);
    wire bits_ok   = (new_bits >= 32'd1) && (new_bits <= 32'd16);
    wire mode_ok   = (new_mode[31:2] == 30'd0);
    wire count_ok  = (new_count != 32'd0);
    wire commit_ok = !(sh_signed && sh_bits == 5'd1);
    wire changed   = {sh_bits, sh_scale, sh_signed, sh_narrow, sh_count}
                  != {cfg_bits, cfg_scale, cfg_signed, cfg_narrow, cfg_count};
    wire clear     = wr_go && (wa == 6'h07) && s_axil_wstrb[0] && s_axil_wdata[0];

    always @(posedge clk) begin
        if (rst) begin
            cfg_bits <= 5'd8;
            cfg_scale <= 32'h3f800000;
            cfg_signed <= 1'b1;
            cfg_narrow <= 1'b0;
            cfg_count <= 32'd1;
            cfg_commit <= 1'b0;
            sh_bits <= 5'd8;
            sh_scale <= 32'h3f800000;
            sh_signed <= 1'b1;
            sh_narrow <= 1'b0;
            sh_count <= 32'd1;
            sh_written <= 1'b0;
            s_axil_bvalid <= 1'b0;
            s_axil_bresp <= OKAY;
            st_cfg_err <= 1'b0;
            st_frame_err <= 1'b0;
            st_nan <= 1'b0;
        end else begin
            cfg_commit <= 1'b0;
            if (s_axil_bvalid && s_axil_bready) s_axil_bvalid <= 1'b0;
            if (frame_err) st_frame_err <= 1'b1;
            if (nan_seen) st_nan <= 1'b1;
            if (wr_go) begin
                s_axil_bvalid <= 1'b1;
                s_axil_bresp <= OKAY;
                case (wa)
                    6'h02: if (bits_ok) begin sh_bits <= new_bits[4:0]; sh_written <= 1'b1; end
                           else begin s_axil_bresp <= SLVERR; st_cfg_err <= 1'b1; end
                    6'h03: begin sh_scale <= new_scale; sh_written <= 1'b1; end
                    6'h04: if (mode_ok) begin {sh_narrow, sh_signed} <= new_mode[1:0]; sh_written <= 1'b1; end
                           else begin s_axil_bresp <= SLVERR; st_cfg_err <= 1'b1; end
                    6'h05: if (count_ok) begin sh_count <= new_count; sh_written <= 1'b1; end
                           else begin s_axil_bresp <= SLVERR; st_cfg_err <= 1'b1; end
                    6'h11: if (s_axil_wstrb[0] && s_axil_wdata[0]) begin
                               if (commit_ok) begin
                                   cfg_bits <= sh_bits; cfg_scale <= sh_scale; cfg_signed <= sh_signed;
                                   cfg_narrow <= sh_narrow; cfg_count <= sh_count;
                                   cfg_commit <= changed;
                                   sh_written <= 1'b0;
                               end else begin
                                   s_axil_bresp <= SLVERR; st_cfg_err <= 1'b1;
                               end
                           end
                    6'h06: if (s_axil_wstrb[0]) begin
                               if (s_axil_wdata[1]) st_cfg_err <= 1'b0;
                               if (s_axil_wdata[2] && !frame_err) st_frame_err <= 1'b0;
                               if (s_axil_wdata[3] && !nan_seen) st_nan <= 1'b0;
                           end
                    6'h07: ;
                    default: s_axil_bresp <= SLVERR;
                endcase
            end
        end
    end

    // ---------------- counters
    always @(posedge clk) begin
        if (rst || clear) begin
            c_cycles <= 32'd0;
            c_q_in <= 32'd0; c_q_out <= 32'd0; c_q_in_st <= 32'd0; c_q_out_st <= 32'd0;
            c_d_in <= 32'd0; c_d_out <= 32'd0; c_d_in_st <= 32'd0; c_d_out_st <= 32'd0;
        end else begin
            c_cycles   <= c_cycles + 32'd1;
            c_q_in     <= c_q_in + popcount(ev_q_in);
            c_q_out    <= c_q_out + popcount(ev_q_out);
            c_q_in_st  <= c_q_in_st + popcount(ev_q_in_stall);
            c_q_out_st <= c_q_out_st + popcount(ev_q_out_stall);
            c_d_in     <= c_d_in + popcount(ev_d_in);
            c_d_out    <= c_d_out + popcount(ev_d_out);
            c_d_in_st  <= c_d_in_st + popcount(ev_d_in_stall);
            c_d_out_st <= c_d_out_st + popcount(ev_d_out_stall);
        end
    end

    // ---------------- read channel
    assign s_axil_arready = !s_axil_rvalid;
    reg [31:0] rd_mux;
    reg        rd_ok;
    always @* begin
        rd_ok = 1'b1;
        case (s_axil_araddr[7:2])
            6'h00: rd_mux = ID_VALUE;
            6'h01: rd_mux = PARAMS_VALUE;
            6'h02: rd_mux = {27'd0, sh_bits};
            6'h03: rd_mux = sh_scale;
            6'h04: rd_mux = {30'd0, sh_narrow, sh_signed};
            6'h05: rd_mux = sh_count;
            6'h06: rd_mux = {26'd0, sh_written, cfg_pending, st_nan, st_frame_err, st_cfg_err, idle};
            6'h07: rd_mux = 32'd0;
            6'h08: rd_mux = c_cycles;
            6'h09: rd_mux = c_q_in;
            6'h0a: rd_mux = c_q_out;
            6'h0b: rd_mux = c_q_in_st;
            6'h0c: rd_mux = c_q_out_st;
            6'h0d: rd_mux = c_d_in;
            6'h0e: rd_mux = c_d_out;
            6'h0f: rd_mux = c_d_in_st;
            6'h10: rd_mux = c_d_out_st;
            6'h11: rd_mux = 32'd0;
            default: begin rd_mux = 32'd0; rd_ok = 1'b0; end
        endcase
    end

    always @(posedge clk) begin
        if (rst) begin
            s_axil_rvalid <= 1'b0;
            s_axil_rdata <= 32'd0;
            s_axil_rresp <= OKAY;
        end else begin
            if (s_axil_rvalid && s_axil_rready) s_axil_rvalid <= 1'b0;
            if (s_axil_arvalid && s_axil_arready) begin
                s_axil_rvalid <= 1'b1;
                s_axil_rdata <= rd_mux;
                s_axil_rresp <= rd_ok ? OKAY : SLVERR;
            end
        end
    end
endmodule
`default_nettype wire
